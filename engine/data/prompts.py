"""Prompts: the fixed evaluation set, and a parser that reads back what a caption asks for.

The parser accepts every caption the dataset writes and hand-written variants such as
"a red square above a blue circle" or "The red square is to the left of the blue circle.".
Articles are ignored. When a caption leaves a colour out, the dataset convention fills it in
(object 1 red, object 2 blue; if only one colour is named the other object gets the other one).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.core.errors import UserError
from engine.data.relations import ALL_PHRASES, PHRASINGS, RELATIONS
from engine.data.scenes import COLORS, SHAPES, make_caption

ARTICLES = {"a", "an", "the"}
# Singular forms only; plural or synonym shapes are not part of the spec.
_SHAPE_RE = "|".join(SHAPES)
_COLOR_RE = "|".join(COLORS)


def _strip_articles(words: list[str]) -> list[str]:
    return [w for w in words if w not in ARTICLES]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower().replace("-", " "))


# Phrases with articles removed, longest first so "directly above" wins over "above".
_PHRASES = sorted(
    ((" ".join(_strip_articles(_words(p))), rel) for p, rel in ALL_PHRASES),
    key=lambda pr: -len(pr[0]),
)
_PHRASE_RE = "|".join(re.escape(p) for p, _ in _PHRASES)
_PHRASE_REL = dict(_PHRASES)
_CAPTION_RE = re.compile(
    rf"^(?:(?P<c1>{_COLOR_RE}) )?(?P<s1>{_SHAPE_RE})(?: (?:is|are|sits|placed|located))?"
    rf" (?P<phrase>{_PHRASE_RE}) (?:(?P<c2>{_COLOR_RE}) )?(?P<s2>{_SHAPE_RE})$"
)


@dataclass(frozen=True)
class Prompt:
    """What a caption asks for: object 1 (colour, shape), its relation to object 2."""

    text: str
    shape1: str
    shape2: str
    relation: str
    color1: str = "red"
    color2: str = "blue"
    phrase: str = ""
    named_color1: bool = True
    named_color2: bool = True

    def to_record(self) -> dict:
        return asdict(self)


def parse_prompt(text: str) -> Prompt:
    """Read a caption; raise UserError naming the text when it is not one we understand."""
    norm = " ".join(_strip_articles(_words(text)))
    m = _CAPTION_RE.match(norm)
    if m is None:
        raise UserError(
            f"cannot read prompt {text!r}: expected '[colour] SHAPE [is] RELATION [colour] SHAPE' "
            f"with shapes {', '.join(SHAPES)} and a relation phrase such as 'above' or "
            f"'to the left of' (see `dit-workbench dataset phrasings`)"
        )
    c1, c2 = m["c1"], m["c2"]
    other = {"red": "blue", "blue": "red"}
    if c1 is None and c2 is None:
        c1, c2 = "red", "blue"
    elif c1 is None:
        c1 = other[c2]
    elif c2 is None:
        c2 = other[c1]
    return Prompt(
        text=text,
        shape1=m["s1"],
        shape2=m["s2"],
        relation=_PHRASE_REL[m["phrase"]],
        color1=c1,
        color2=c2,
        phrase=m["phrase"],
        named_color1=m["c1"] is not None,
        named_color2=m["c2"] is not None,
    )


def eval_prompts() -> list[Prompt]:
    """The fixed evaluation set: 6 ordered shape pairs x 22 phrasings x (colours named, not).

    264 prompts, the size of the paper's evaluation set.
    """
    out = []
    for named in (True, False):
        for s1 in SHAPES:
            for s2 in SHAPES:
                if s1 == s2:
                    continue
                for rel in RELATIONS:
                    for phrase in PHRASINGS[rel]:
                        text = make_caption(
                            s1, s2, phrase, "red" if named else None, "blue" if named else None
                        )
                        out.append(Prompt(text, s1, s2, rel, "red", "blue", phrase, named, named))
    return out


def read_prompts_file(path, free: bool = False) -> list[Prompt]:
    """One caption per line; blank lines and lines starting with # are skipped. With `free`,
    a line the parser cannot read is a free prompt (``free_prompt``) instead of an error."""
    from pathlib import Path

    from engine.core import fs, limits

    p = Path(path)
    if p.is_dir():
        raise UserError(
            f"prompts file {str(p)!r} is a folder; give a text file with one caption per line"
        )
    if not p.exists():
        raise UserError(
            f"prompts file {str(p)!r} does not exist; give a text file with one caption per line"
        )
    fs.regular_file(p, "prompts file", limits.MAX_METADATA_BYTES)  # a FIFO, /dev/zero: said so
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(
            f"prompts file {str(p)!r} is not UTF-8 text (byte {e.start}); give a text file with "
            "one caption per line"
        ) from None
    except OSError as e:
        raise UserError(
            f"cannot read prompts file {str(p)!r} ({e.strerror or e}); check its permissions"
        ) from None
    prompts = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            prompts.append(parse_prompt(line))
        except UserError as e:
            if not free:
                raise UserError(f"{p}:{lineno}: {e}") from None
            prompts.append(free_prompt(line))
    if not prompts:
        raise UserError(f"prompts file {str(p)!r} has no captions; write one caption per line")
    return prompts


def free_prompt(text: str) -> Prompt:
    """A caption outside the dataset's grammar (free text for a pretrained pipeline): no
    shapes, colours or relation to score, so the evaluator counts it as failed and the
    synopsis gives its images no object masks (``engine.probe.synopsis``)."""
    return Prompt(text, "", "", "", "", "", "", False, False)


def resolve_prompt_spec(spec: str, cwd: str | None = None) -> str:
    """A `--prompts` value with its file made absolute against `cwd` (keeping "free:")."""
    if spec == "eval":
        return spec
    free = spec.startswith("free:")
    path = str(Path(cwd or ".", spec[5:] if free else spec).resolve())
    return f"free:{path}" if free else path


def prompt_set(spec: str) -> tuple[list[Prompt], str]:
    """`--prompts` of the probe commands: "eval" (the fixed 264), a file of captions, or
    "free:FILE", a file of any text (captions the parser reads keep their scene, others become
    free prompts); returns the prompts and the label stored with results."""
    if spec == "eval":
        return eval_prompts(), "eval"
    if spec.startswith("free:"):
        return read_prompts_file(spec[5:], free=True), "free:" + str(Path(spec[5:]).resolve())
    return read_prompts_file(spec), str(Path(spec).resolve())
