"""The interface every text encoder implements, and the files it leaves in a checkpoint.

An encoder turns a batch of captions into token embeddings ``[B, MAX_LENGTH, dim]`` plus an
attention mask; the DiT cross-attends to them (``dim`` is its ``caption_channels``). A checkpoint
directory holds the encoder's files under ``text_encoder/``: always ``config.json`` (the spec and
what is needed to check a reload), plus whatever the encoder needs to rebuild itself exactly
(the rte table). Nothing is pickled.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.core.errors import UserError
from engine.text.categories import MAX_LENGTH

SUBDIR = "text_encoder"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1


@dataclass
class Tokens:
    """One tokenized batch; every per-caption list has ``MAX_LENGTH`` entries."""

    words: list[list[str]]  # token text per position; "<pad>" for padding
    categories: list[list[str]]  # one of CATEGORIES per position
    mask: torch.Tensor  # [B, MAX_LENGTH] long, 1 = real token
    ids: torch.Tensor | None  # [B, MAX_LENGTH] long token ids, where the encoder has them

    def __len__(self) -> int:
        return len(self.words)


class TextEncoder(ABC):
    """Captions -> (embeddings [B, MAX_LENGTH, dim] float32, mask [B, MAX_LENGTH] long)."""

    spec: str
    dim: int
    max_length: int = MAX_LENGTH

    @abstractmethod
    def tokenize(self, captions: list[str]) -> Tokens: ...

    @abstractmethod
    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]: ...

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write this encoder's files under ``directory / "text_encoder"``."""

    @abstractmethod
    def to(self, device) -> TextEncoder: ...

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(spec={self.spec!r}, dim={self.dim})"


def check_captions(captions) -> list[str]:
    """A list of strings, or a UserError (a bare string is the usual mistake)."""
    if isinstance(captions, str):
        raise UserError(
            f"encode/tokenize take a list of captions, got the string {captions!r}; "
            "wrap it in a list"
        )
    captions = list(captions)
    for c in captions:
        if not isinstance(c, str):
            raise UserError(f"captions must be strings, got {type(c).__name__} {c!r}")
    return captions


def too_long(caption: str, n: int, max_length: int = MAX_LENGTH, unit: str = "tokens") -> UserError:
    return UserError(
        f"caption {caption!r} needs {n} {unit}, more than the {max_length} the text encoder "
        f"takes; shorten it"
    )


def encoder_dir(directory: Path) -> Path:
    return Path(directory) / SUBDIR


def write_config(directory: Path, config: dict) -> Path:
    """Write ``text_encoder/config.json`` in a checkpoint directory; return the subdirectory."""
    sub = encoder_dir(directory)
    sub.mkdir(parents=True, exist_ok=True)
    config = {"format_version": FORMAT_VERSION, "max_length": MAX_LENGTH, **config}
    (sub / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return sub


def read_config(directory: Path) -> dict:
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(
            f"checkpoint directory {str(directory)!r} does not exist; give a checkpoint directory"
        )
    path = encoder_dir(directory) / CONFIG_NAME
    if not path.is_file():
        raise UserError(
            f"{str(directory)!r} has no {SUBDIR}/{CONFIG_NAME}; it is not a checkpoint written "
            "with a text encoder (retrain or give another checkpoint)"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(
            f"{str(path)!r} is not readable JSON ({e}); the checkpoint is damaged"
        ) from None
    if not isinstance(config, dict) or not isinstance(config.get("spec"), str):
        raise UserError(f"{str(path)!r} names no text encoder spec; the checkpoint is damaged")
    if config.get("max_length", MAX_LENGTH) != MAX_LENGTH:
        raise UserError(
            f"{str(path)!r} has max_length {config.get('max_length')}, this code uses "
            f"{MAX_LENGTH}; use a matching version of dit-workbench"
        )
    return config
