"""Text interventions: edit the conditional caption, or the embedding of some of its tokens.

Caption edits work on words (lowercase ASCII words, as the captions' token categories are
computed; punctuation is dropped) of the conditional caption only; the images are still scored
against the original prompt, and each sample keeps the initial noise of its original
(prompt, seed) pair, so baseline and intervened images stay paired.

- `drop-words relation,shape2`: remove every word of those categories ("red square is blue
  circle"). Dropping everything leaves the empty caption.
- `swap-words above=below [left=right ..]`: replace whole words.
- `insert-filler the [where=before-relation] [count=1]`: insert a filler word. where= is start,
  end, before-CAT or after-CAT (CAT a token category: color1 shape1 relation color2 shape2), or
  a word index N (insert before the N-th word, 0-based; past the end appends). A caption
  without the anchor category is left unchanged.
- `embed-add "+above -below" [scale=1] [tokens=relation]`: add scale x (sum of the signed word
  vectors) to the encoder output at every position of the chosen categories. A word's vector is,
  for rte encoders, its own table row (no position code, so "+above -below" is the pure word
  difference); for contextual encoders (MiniLM, T5), the mean output over the word's own
  tokens when encoded alone. scale=0 changes nothing (bit-identical images).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from engine.core.errors import UserError
from engine.intervene.base import Batch, Intervention
from engine.intervene.spec import (
    format_categories,
    parse_categories,
    parse_float,
    spec_error,
    unknown_options,
)
from engine.text.categories import caption_categories

_WORD = re.compile(r"^[a-z0-9]+$")
_ANCHOR_CATS = ("color1", "shape1", "relation", "color2", "shape2")


def _words(caption: str) -> list[tuple[str, str]]:
    return [(w, c) for w, c, _, _ in caption_categories(caption)]


@dataclass(frozen=True)
class DropWords(Intervention):
    categories: tuple[str, ...]
    kind = "drop-words"

    @classmethod
    def from_args(cls, positional, options, spec) -> DropWords:
        unknown_options(options, ("tokens",), spec)
        text = " ".join(positional) or options.get("tokens", "")
        cats = parse_categories(text, spec)
        if not cats:
            raise spec_error(spec, "drop-words needs at least one token category, e.g. relation")
        return cls(cats)

    def text(self) -> str:
        return f"drop-words {format_categories(self.categories)}"

    def edit_caption(self, caption: str) -> str:
        return " ".join(w for w, c in _words(caption) if c not in self.categories)


@dataclass(frozen=True)
class SwapWords(Intervention):
    pairs: tuple[tuple[str, str], ...]
    kind = "swap-words"

    @classmethod
    def from_args(cls, positional, options, spec) -> SwapWords:
        pairs = list(options.items())
        for p in positional:
            a, eq, b = p.partition("=")
            if not eq:
                raise spec_error(spec, f"swap-words takes WORD=WORD pairs, got {p!r}")
            pairs.append((a, b))
        if not pairs:
            raise spec_error(spec, "swap-words needs at least one WORD=WORD pair")
        out = []
        for a, b in pairs:
            a, b = a.strip().lower(), b.strip().lower()
            if not _WORD.match(a) or not _WORD.match(b):
                raise spec_error(spec, f"swap-words {a}={b}: words are lowercase letters/digits")
            out.append((a, b))
        return cls(tuple(out))

    def text(self) -> str:
        return "swap-words " + " ".join(f"{a}={b}" for a, b in self.pairs)

    def edit_caption(self, caption: str) -> str:
        table = dict(self.pairs)
        return " ".join(table.get(w, w) for w, _ in _words(caption))


@dataclass(frozen=True)
class InsertFiller(Intervention):
    word: str
    where: str = "before-relation"
    count: int = 1
    kind = "insert-filler"

    @classmethod
    def from_args(cls, positional, options, spec) -> InsertFiller:
        unknown_options(options, ("where", "count"), spec)
        if len(positional) != 1 or not _WORD.match(positional[0].lower()):
            raise spec_error(spec, "insert-filler takes one word, e.g. insert-filler the")
        where = options.get("where", "before-relation").lower()
        ok = where in ("start", "end") or where.isdigit()
        side, _, cat = where.partition("-")
        ok = ok or (side in ("before", "after") and cat in _ANCHOR_CATS)
        if not ok:
            raise spec_error(
                spec,
                f"where={where!r} is not start, end, a word index, or before-/after- one of "
                f"{', '.join(_ANCHOR_CATS)}",
            )
        try:
            count = int(options.get("count", "1"))
        except ValueError:
            count = -1
        if not 1 <= count <= 10:
            raise spec_error(spec, f"count={options.get('count')!r} must be an integer 1-10")
        return cls(positional[0].lower(), where, count)

    def text(self) -> str:
        s = f"insert-filler {self.word}"
        if self.where != "before-relation":
            s += f" where={self.where}"
        if self.count != 1:
            s += f" count={self.count}"
        return s

    def edit_caption(self, caption: str) -> str:
        words = _words(caption)
        plain = [w for w, _ in words]
        if self.where == "start":
            at = 0
        elif self.where == "end":
            at = len(plain)
        elif self.where.isdigit():
            at = min(int(self.where), len(plain))
        else:
            side, _, cat = self.where.partition("-")
            idx = [i for i, (_, c) in enumerate(words) if c == cat]
            if not idx:
                return caption
            at = idx[0] if side == "before" else idx[-1] + 1
        return " ".join(plain[:at] + [self.word] * self.count + plain[at:])


def _terms(text: str, spec: str) -> tuple[tuple[float, str], ...]:
    out = []
    for t in text.split():
        sign = -1.0 if t.startswith("-") else 1.0
        w = t.lstrip("+-").lower()
        if not _WORD.match(w):
            raise spec_error(spec, f"embed-add term {t!r} is not +WORD or -WORD")
        out.append((sign, w))
    if not out:
        raise spec_error(spec, 'embed-add needs words, e.g. embed-add "+above -below"')
    return tuple(out)


def word_vector(encoder, word: str) -> torch.Tensor:
    """One word's embedding vector [C] (see the module doc)."""
    table, index = getattr(encoder, "table", None), getattr(encoder, "index", None)
    if table is not None and index is not None:
        if word not in index:
            encoder.tokenize([word])  # raises the encoder's own unknown-word error
            raise UserError(f"the text encoder does not know the word {word!r}")
        return table[index[word]].float()
    tokens = encoder.tokenize([word])
    emb, mask = encoder.encode([word])
    cats = tokens.categories[0]
    pos = [i for i, c in enumerate(cats) if mask[0, i] and c not in ("filler", "pad")]
    pos = pos or [i for i in range(len(cats)) if mask[0, i]]
    return emb[0, pos].float().mean(0)


@dataclass(frozen=True)
class EmbedAdd(Intervention):
    terms: tuple[tuple[float, str], ...]
    scale: float = 1.0
    tokens: tuple[str, ...] = ("relation",)
    kind = "embed-add"

    @classmethod
    def from_args(cls, positional, options, spec) -> EmbedAdd:
        unknown_options(options, ("scale", "tokens"), spec)
        terms = _terms(" ".join(positional), spec)
        scale = parse_float(options.get("scale", "1"), "scale", spec)
        return cls(terms, scale, parse_categories(options.get("tokens", "relation"), spec))

    def text(self) -> str:
        terms = " ".join(f"{'+' if s > 0 else '-'}{w}" for s, w in self.terms)
        s = f'embed-add "{terms}"'
        if self.scale != 1.0:
            s += f" scale={self.scale:g}"
        if self.tokens != ("relation",):
            s += f" tokens={format_categories(self.tokens)}"
        return s

    def direction(self, encoder) -> torch.Tensor:
        vecs = [s * word_vector(encoder, w) for s, w in self.terms]
        return torch.stack(vecs).sum(0)

    def edit_embedding(self, batch: Batch, emb: torch.Tensor) -> torch.Tensor:
        if self.scale == 0 or not self.tokens:
            return emb
        lo, hi = batch.rows()
        sel = torch.zeros(emb.shape[:2], dtype=torch.bool)
        for r in range(lo, hi):
            cats = batch.tokens.categories[r]
            sel[r] = torch.tensor([c in self.tokens for c in cats])
        if not sel.any():
            return emb
        d = (self.scale * self.direction(batch.encoder)).to(emb.device, emb.dtype)
        emb = emb.clone()
        emb[sel.to(emb.device)] += d
        return emb
