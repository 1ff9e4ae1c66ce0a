"""rte: random token embeddings, a text encoder with no learned language at all.

Each vocabulary word gets a fixed random vector; the DiT has to learn what the words mean from
the images alone, which makes the text side of the circuit fully known.

- Vectors: entries i.i.d. N(0, 1), ``dim`` entries (default 384, MiniLM's width, so the two are
  comparable). Unit variance per entry is the scale LayerNorm'd transformer states have, and it
  keeps word identity (variance 1 per entry) a little stronger than the position code (sin/cos,
  variance 1/2 per entry). Each word's vector is drawn from its own ``torch.Generator`` seeded
  from sha256("rte:{seed}:{word}"), so a word's vector depends only on the seed and the word,
  not on the rest of the vocabulary.
- Positions: ``rte`` adds the standard sinusoidal position encoding over the 20 positions
  (PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(same)); ``rte-nopos`` adds nothing,
  so a word has the same vector wherever it stands.
- Padding: the "<pad>" vector is zero, so a padded position holds the zero vector plus, for
  ``rte``, its position encoding (and zero for ``rte-nopos``); the mask is 0 there.
- The empty caption "" (classifier-free-guidance null caption) is the single token "<empty>",
  its own random vector, at position 0 with mask 1; the rest is padding.
- Tokenization: lowercase ASCII words, punctuation dropped; an unknown word is a UserError.
- Saved as ``text_encoder/rte.safetensors`` (tensors "table" [V, dim] and, for rte,
  "position_encoding" [20, dim]; the vocabulary in its metadata and in config.json), so a reload
  gives bit-identical embeddings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from engine.core.errors import UserError
from engine.data.relations import ALL_PHRASES
from engine.data.scenes import COLORS, SHAPES
from engine.text.base import (
    MAX_LENGTH,
    TextEncoder,
    Tokens,
    check_captions,
    encoder_dir,
    too_long,
    write_config,
)
from engine.text.categories import split_words, word_categories

PAD = "<pad>"
EMPTY = "<empty>"
FILLERS: tuple[str, ...] = ("the", "a", "an")
DEFAULT_DIM = 384
FILE_NAME = "rte.safetensors"


def dataset_vocabulary() -> tuple[str, ...]:
    """ "<pad>", "<empty>", then every word the dataset writes plus the fillers, sorted."""
    words = set(COLORS) | set(SHAPES) | {"is"} | set(FILLERS)
    words |= {w for phrase, _ in ALL_PHRASES for w in phrase.split()}
    return (PAD, EMPTY, *sorted(words))


def word_vector(word: str, seed: int, dim: int) -> torch.Tensor:
    """The fixed N(0, 1) vector of one word ("<pad>" is zero)."""
    if word == PAD:
        return torch.zeros(dim, dtype=torch.float32)
    digest = hashlib.sha256(f"rte:{seed}:{word}".encode()).digest()
    g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return torch.randn(dim, generator=g, dtype=torch.float32)


def sinusoidal_position_encoding(n: int, dim: int) -> torch.Tensor:
    """[n, dim] float32: PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(same)."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    freq = torch.pow(10000.0, -torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    pe = torch.zeros(n, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe.to(torch.float32)


def parse_rte_spec(spec: str) -> tuple[bool, int]:
    """ "rte" | "rte-nopos", optionally ":DIM" -> (position encoding?, dim)."""
    name, _, dim_s = spec.partition(":")
    if name not in ("rte", "rte-nopos"):
        raise UserError(f"unknown rte spec {spec!r}; use 'rte', 'rte-nopos', 'rte:DIM'")
    dim = DEFAULT_DIM
    if dim_s:
        if not dim_s.isdigit() or int(dim_s) < 2 or int(dim_s) % 2:
            raise UserError(f"rte spec {spec!r}: the dimension must be an even integer >= 2")
        dim = int(dim_s)
    return name == "rte", dim


def _spec(position: bool, dim: int) -> str:
    name = "rte" if position else "rte-nopos"
    return name if dim == DEFAULT_DIM else f"{name}:{dim}"


class RandomTokenEncoder(TextEncoder):
    """Fixed random word vectors (+ sinusoidal positions for ``rte``)."""

    def __init__(
        self,
        vocab: list[str] | tuple[str, ...],
        table: torch.Tensor,
        position_encoding: torch.Tensor | None,
        seed: int | None = None,
    ):
        self.vocab = tuple(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.table = table.to(torch.float32)
        self.position_encoding = (
            None if position_encoding is None else position_encoding.to(torch.float32)
        )
        self.seed = seed
        self.dim = int(table.shape[1])
        self.spec = _spec(position_encoding is not None, self.dim)
        self.max_length = MAX_LENGTH

    @classmethod
    def build(cls, spec: str = "rte", seed: int = 0) -> RandomTokenEncoder:
        position, dim = parse_rte_spec(spec)
        vocab = dataset_vocabulary()
        table = torch.stack([word_vector(w, seed, dim) for w in vocab])
        pe = sinusoidal_position_encoding(MAX_LENGTH, dim) if position else None
        return cls(vocab, table, pe, seed)

    @property
    def device(self) -> torch.device:
        return self.table.device

    def to(self, device) -> RandomTokenEncoder:
        self.table = self.table.to(device)
        if self.position_encoding is not None:
            self.position_encoding = self.position_encoding.to(device)
        return self

    def _unknown(self, caption: str, word: str) -> UserError:
        known = ", ".join(w for w in self.vocab if w not in (PAD, EMPTY))
        return UserError(
            f"caption {caption!r} has the word {word!r}, which the {self.spec} text encoder does "
            f"not know; its vocabulary is: {known}"
        )

    def tokenize(self, captions: list[str]) -> Tokens:
        captions = check_captions(captions)
        all_words, all_cats, all_ids, all_mask = [], [], [], []
        for caption in captions:
            words = split_words(caption)
            if not words:
                words, cats = [EMPTY], ["filler"]
            else:
                for w in words:
                    if w not in self.index:
                        raise self._unknown(caption, w)
                if len(words) > MAX_LENGTH:
                    raise too_long(caption, len(words), unit="words")
                cats = word_categories(words)
            n = len(words)
            pad = MAX_LENGTH - n
            all_words.append(words + [PAD] * pad)
            all_cats.append(cats + ["pad"] * pad)
            all_ids.append([self.index[w] for w in words] + [self.index[PAD]] * pad)
            all_mask.append([1] * n + [0] * pad)
        shape = (len(captions), MAX_LENGTH)
        ids = torch.tensor(all_ids, dtype=torch.long).reshape(shape)
        mask = torch.tensor(all_mask, dtype=torch.long).reshape(shape)
        return Tokens(all_words, all_cats, mask.to(self.device), ids.to(self.device))

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, L] vocabulary ids -> [B, L, dim] embeddings (position code added for rte)."""
        emb = self.table[ids.to(self.device)]
        if self.position_encoding is not None:
            emb = emb + self.position_encoding[: ids.shape[-1]]
        return emb

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenize(captions)
        return self.embed_ids(tokens.ids), tokens.mask

    def save(self, directory: Path) -> None:
        sub = write_config(
            directory,
            {
                "spec": self.spec,
                "kind": "rte",
                "dim": self.dim,
                "seed": self.seed,
                "position_encoding": self.position_encoding is not None,
                "vocab": list(self.vocab),
                "file": FILE_NAME,
            },
        )
        tensors = {"table": self.table.detach().cpu().contiguous()}
        if self.position_encoding is not None:
            tensors["position_encoding"] = self.position_encoding.detach().cpu().contiguous()
        save_file(
            tensors,
            str(sub / FILE_NAME),
            metadata={"spec": self.spec, "vocab": json.dumps(list(self.vocab))},
        )

    @classmethod
    def load(cls, directory: Path, config: dict) -> RandomTokenEncoder:
        path = encoder_dir(directory) / FILE_NAME
        where = f"checkpoint {str(directory)!r}"
        if not path.is_file():
            raise UserError(f"{where} has no {path.name} for its rte text encoder; it is damaged")
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except (OSError, SafetensorError) as e:
            raise UserError(f"cannot read {str(path)!r} ({e}); the checkpoint is damaged") from None
        vocab = config.get("vocab")
        try:
            meta_vocab = json.loads(meta.get("vocab", "null"))
        except json.JSONDecodeError:
            meta_vocab = None
        table = tensors.get("table")
        pe = tensors.get("position_encoding")
        want_pe = bool(config.get("position_encoding"))
        problems = []
        if not isinstance(vocab, list) or vocab != meta_vocab:
            problems.append("the vocabulary in config.json and rte.safetensors differ")
        if table is None or table.ndim != 2:
            problems.append("no [V, dim] 'table' tensor")
        elif isinstance(vocab, list) and table.shape != (len(vocab), config.get("dim")):
            problems.append(
                f"table shape {tuple(table.shape)} != ({len(vocab)}, {config.get('dim')})"
            )
        if want_pe != (pe is not None):
            problems.append("position encoding presence does not match the config")
        elif pe is not None and table is not None and pe.shape != (MAX_LENGTH, table.shape[-1]):
            problems.append(f"position encoding shape {tuple(pe.shape)} is wrong")
        if problems:
            raise UserError(f"{where}: rte text encoder files mismatch: {'; '.join(problems)}")
        enc = cls(vocab, table, pe, config.get("seed"))
        if enc.spec != config["spec"]:
            raise UserError(
                f"{where}: rte text encoder spec {config['spec']!r} does not match its files "
                f"({enc.spec!r}); the checkpoint is damaged"
            )
        return enc
