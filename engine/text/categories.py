"""Token categories: which part of the caption each token position belongs to.

A dataset caption is "{c1} {shape1} is {phrase} {c2} {shape2}" with each colour word optional.
Probes and interventions ask "which positions hold the relation?", so every encoder reports,
per token position, one of ``CATEGORIES``:

- ``shape1`` / ``shape2``: the first / the last shape word;
- ``color1`` / ``color2``: a colour word right before shape1 / shape2;
- ``relation``: every word of the longest known relation phrase (``ALL_PHRASES``), including the
  "to", "the", "of" inside it;
- ``filler``: everything else ("is", an inserted "the" or "a", punctuation, unknown words, the
  special tokens of HF tokenizers such as [CLS], [SEP], </s>, and the rte "<empty>" token);
- ``pad``: padding positions.

Tagging is robust to edited captions (inserted fillers, a dropped relation or shape); the
fallbacks for such captions are documented in :func:`word_categories`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from engine.data.relations import ALL_PHRASES
from engine.data.scenes import COLORS, SHAPES

# Token positions every encoder produces (captions are padded or cut to this).
MAX_LENGTH = 20

CATEGORIES: tuple[str, ...] = ("color1", "shape1", "relation", "color2", "shape2", "filler", "pad")

_SHAPES = frozenset(SHAPES)
_COLORS = frozenset(COLORS)
_WORD_RE = re.compile(r"[a-z0-9]+", flags=re.IGNORECASE | re.ASCII)

# Relation phrases as word tuples, longest first (ties keep ALL_PHRASES order).
PHRASE_WORDS: tuple[tuple[str, ...], ...] = tuple(
    sorted({tuple(p.split()): None for p, _ in ALL_PHRASES}, key=lambda w: -len(w))
)


def split_words(text: str) -> list[str]:
    """Lowercase ASCII words of a caption; anything else (punctuation, hyphens) separates words."""
    return [w for w, _, _ in word_spans(text)]


def word_spans(text: str) -> list[tuple[str, int, int]]:
    """The words of ``split_words(text)`` with their [start, end) character spans in ``text``."""
    return [(m.group(0).lower(), m.start(), m.end()) for m in _WORD_RE.finditer(text)]


def find_relation(words: Sequence[str]) -> tuple[int, int] | None:
    """[start, end) word span of the longest relation phrase in ``words`` (earliest on ties)."""
    words = list(words)
    for phrase in PHRASE_WORDS:
        n = len(phrase)
        for i in range(len(words) - n + 1):
            if tuple(words[i : i + n]) == phrase:
                return i, i + n
    return None


def word_categories(words: Sequence[str]) -> list[str]:
    """One category from ``CATEGORIES`` per word of a caption (lowercase words, see module doc).

    Fallbacks for edited captions, none of which raise:

    - one shape word only: it is ``shape2`` when it comes after the relation phrase, else
      ``shape1``; shape words between the first and the last are ``filler``;
    - a colour word not right before shape1/shape2 (e.g. "red is above blue square") is
      ``color1`` when it comes before the relation phrase and ``color2`` after it; with no
      relation phrase it is ``filler``;
    - no relation phrase: no word is ``relation``.
    """
    words = [w.lower() for w in words]
    cats = ["filler"] * len(words)
    rel = find_relation(words)
    if rel is not None:
        for i in range(*rel):
            cats[i] = "relation"
    shape_pos = [i for i, w in enumerate(words) if w in _SHAPES and cats[i] == "filler"]
    if len(shape_pos) == 1:
        i = shape_pos[0]
        cats[i] = "shape2" if rel is not None and i >= rel[1] else "shape1"
    elif len(shape_pos) >= 2:
        cats[shape_pos[0]] = "shape1"
        cats[shape_pos[-1]] = "shape2"
    for i, w in enumerate(words):
        if w not in _COLORS or cats[i] != "filler":
            continue
        nxt = cats[i + 1] if i + 1 < len(words) else None
        if nxt == "shape1":
            cats[i] = "color1"
        elif nxt == "shape2":
            cats[i] = "color2"
        elif rel is not None:
            cats[i] = "color1" if i < rel[0] else "color2"
    return cats


def caption_categories(caption: str) -> list[tuple[str, str, int, int]]:
    """(word, category, start, end) for each word of a caption, spans in ``caption``."""
    spans = word_spans(caption)
    cats = word_categories([w for w, _, _ in spans])
    return [(w, c, s, e) for (w, s, e), c in zip(spans, cats, strict=True)]


def subword_categories(
    caption: str,
    offsets: Sequence[tuple[int, int]],
    attention_mask: Sequence[int],
    special_tokens_mask: Sequence[int] | None = None,
) -> list[str]:
    """Category of each subword token of an HF tokenizer, from its ``offset_mapping``.

    A token takes the category of the caption word its character span overlaps; padding
    (attention 0) is ``pad``; special tokens ([CLS], [SEP], </s>: special mask 1 or an empty
    span) and tokens on no word (punctuation) are ``filler``. SentencePiece tokenizers (T5)
    give a word-initial piece ("\u2581left") a span that starts at the space before the word:
    leading spaces are not counted, and a lone "\u2581" piece (only the space) belongs to the
    word right after it, whose first piece it is.
    """
    words = caption_categories(caption)
    out = []
    for k, ((s, e), m) in enumerate(zip(offsets, attention_mask, strict=True)):
        if not m:
            out.append("pad")
            continue
        if (special_tokens_mask is not None and special_tokens_mask[k]) or e <= s:
            out.append("filler")
            continue
        while s < e and caption[s].isspace():
            s += 1
        if s == e:  # a lone word-start piece: the word that begins right after the space
            s, e = e, e + 1
        cat = "filler"
        for _, c, ws, we in words:
            if s < we and e > ws:
                cat = c
                break
        out.append(cat)
    return out
