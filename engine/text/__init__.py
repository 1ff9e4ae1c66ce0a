"""Text encoders with one interface: captions -> token embeddings [B, 20, C] + mask.

Specs: ``rte`` (fixed random word vectors + sinusoidal positions), ``rte-nopos`` (no
positions), each optionally ``:DIM`` (default 384); ``minilm`` (frozen all-MiniLM-L6-v2, 384);
``t5:<dir>`` (frozen T5 encoder from a local directory, dim = d_model).

``build_text_encoder(spec, seed)`` makes a new one for training; ``encoder.save(ckpt_dir)``
writes ``ckpt_dir/text_encoder/``; ``load_text_encoder(ckpt_dir)`` restores exactly the same
encoder or raises a UserError. Per-position categories (``CATEGORIES``) come with
``encoder.tokenize(captions)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from engine.core.errors import UserError
from engine.text.categories import CATEGORIES, MAX_LENGTH, subword_categories, word_categories

if TYPE_CHECKING:
    from engine.text.base import TextEncoder, Tokens


def __getattr__(name: str):
    # PEP 562: the encoder classes load torch; torch-free code (the engine's validation, the TUI)
    # imports this package for its constants without paying for it.
    if name in ("TextEncoder", "Tokens", "read_config"):
        from engine.text import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CATEGORIES",
    "MAX_LENGTH",
    "SPECS_HELP",
    "TextEncoder",
    "Tokens",
    "build_text_encoder",
    "load_text_encoder",
    "subword_categories",
    "word_categories",
]

SPECS_HELP = "'rte', 'rte-nopos' (optionally ':DIM', e.g. 'rte:256'), 'minilm', 't5:<dir>'"


def build_text_encoder(spec: str, seed: int = 0) -> TextEncoder:
    """A new encoder for ``spec``; ``seed`` draws the rte vectors (ignored by pretrained ones)."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"text encoder spec {spec!r} is empty; use one of {SPECS_HELP}")
    spec = spec.strip()
    name = spec.partition(":")[0]
    if name in ("rte", "rte-nopos"):
        from engine.text.rte import RandomTokenEncoder

        return RandomTokenEncoder.build(spec, seed)
    if spec == "minilm":
        from engine.text.hf import MiniLMEncoder

        return MiniLMEncoder.build()
    if name == "t5":
        directory = spec.partition(":")[2]
        if not directory:
            raise UserError(f"text encoder spec {spec!r} names no directory; use 't5:<dir>'")
        from engine.text.hf import T5TextEncoder

        return T5TextEncoder.build(directory)
    raise UserError(f"unknown text encoder {spec!r}; use one of {SPECS_HELP}")


def load_text_encoder(directory: Path) -> TextEncoder:
    """The encoder a checkpoint directory was saved with (see ``TextEncoder.save``)."""
    from engine.text.base import read_config

    directory = Path(directory)
    config = read_config(directory)
    spec = config["spec"]
    kind = config.get("kind")
    if kind == "rte":
        from engine.text.rte import RandomTokenEncoder

        return RandomTokenEncoder.load(directory, config)
    if kind in ("minilm", "t5"):
        from engine.text.hf import HFTextEncoder

        try:
            enc = build_text_encoder(spec)
        except UserError as e:
            raise UserError(
                f"checkpoint {str(directory)!r} uses text encoder {spec!r}, which cannot be "
                f"loaded: {e}"
            ) from None
        assert isinstance(enc, HFTextEncoder)
        return enc.check_config(config, directory)
    raise UserError(
        f"checkpoint {str(directory)!r} names an unknown text encoder kind {kind!r} "
        f"(spec {spec!r}); use a matching version of dit-workbench"
    )
