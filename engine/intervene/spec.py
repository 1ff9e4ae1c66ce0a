"""The one-line text form of interventions, shared by the CLI, the engine and the TUI.

    mask-head L.H [tokens=relation] [steps=0-13] [branch=cond|uncond|both]
    zero-head L.H [attn=cross|self] [steps=..] [branch=both|cond|uncond]
    drop-words CATEGORY[,CATEGORY..]
    swap-words WORD=WORD [WORD=WORD..]
    insert-filler WORD [where=before-relation] [count=1]
    embed-add "+WORD -WORD" [scale=1] [tokens=relation]
    patch L.H from="PROMPT" [attn=cross|self] [what=out|probs] [steps=..] [branch=cond|uncond|both]

Several interventions joined with " + " apply together in one run ("mask-head 0.0 + zero-head
1.2"); a "+" inside quotes (embed-add "+above -below") is part of its argument. Steps are
denoising step indices, 0 = the first (noisiest) step: "0-13", "0,2,4-6" or "all".
Token categories: color1 shape1 relation color2 shape2 filler pad, plus the groups color
(color1,color2), shape (shape1,shape2), words (every real token) and none.

`parse_spec(text, num_layers, num_heads, steps)` gives a `Composite` (checked against the model
when its sizes are given) or a `UserError` that lists the valid forms and the model's layer and
head ranges. `expand_sweep("mask-head *.* tokens=relation", L, H)` gives one spec per head.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from engine.core.errors import UserError
from engine.intervene.registry import INTERVENTIONS

# engine.text.CATEGORIES (tests/test_probe.py checks they agree), taken from the torch-free
# synopsis module so that `precheck` can run in the engine, where validation loads no torch.
from engine.probe.synopsis import TEXT_CATS as CATEGORIES

if TYPE_CHECKING:
    from engine.intervene.base import Composite, Intervention

# The kinds come from engine.intervene.registry, which names each class without importing it.
FORMS: tuple[str, ...] = tuple(k.form for k in INTERVENTIONS.values())
KINDS: tuple[str, ...] = tuple(INTERVENTIONS)

CATEGORY_GROUPS: dict[str, tuple[str, ...]] = {
    "color": ("color1", "color2"),
    "colors": ("color1", "color2"),
    "shape": ("shape1", "shape2"),
    "shapes": ("shape1", "shape2"),
    "words": tuple(c for c in CATEGORIES if c != "pad"),
    "all": tuple(c for c in CATEGORIES if c != "pad"),
    "none": (),
}
BRANCHES = ("cond", "uncond", "both")
ATTNS = ("cross", "self")
_HEAD_RE = re.compile(r"^(\d+)\.(\d+)$")
_WILD_RE = re.compile(r"^(\*|\d+)\.(\*|\d+)$")
_STEPS_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


class SpecError(UserError):
    pass


def forms_help(num_layers: int | None = None, num_heads: int | None = None) -> str:
    text = (
        f"valid forms: {'; '.join(FORMS)}; join several with ' + '; token categories: "
        f"{', '.join(CATEGORIES)} or {', '.join(k for k in CATEGORY_GROUPS if k not in ('colors', 'shapes', 'all'))}"
    )
    if num_layers is not None and num_heads is not None:
        text += f"; this model has layers 0-{num_layers - 1} and heads 0-{num_heads - 1}"
    return text


def spec_error(
    spec: str, problem: str, num_layers: int | None = None, num_heads: int | None = None
) -> SpecError:
    return SpecError(f"bad intervention {spec!r}: {problem}; {forms_help(num_layers, num_heads)}")


# lexing


def lex(text: str) -> list[tuple[str, bool]]:
    """Whitespace-separated tokens with quotes removed: [(token, quoted?)]."""
    tokens: list[tuple[str, bool]] = []
    cur: list[str] = []
    quoted = False
    started = False
    quote: str | None = None
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
            else:
                cur.append(ch)
            continue
        if ch in "\"'":
            quote, quoted, started = ch, True, True
        elif ch.isspace():
            if started:
                tokens.append(("".join(cur), quoted))
            cur, quoted, started = [], False, False
        else:
            cur.append(ch)
            started = True
    if quote:
        raise SpecError(f"bad intervention {text!r}: unclosed quote {quote}; {forms_help()}")
    if started:
        tokens.append(("".join(cur), quoted))
    return tokens


def _quote(token: str) -> str:
    if token and not any(c.isspace() or c in "\"'" for c in token) and token != "+":
        return token
    key, eq, value = token.partition("=")
    if eq and re.match(r"^[a-z]+$", key) and '"' not in value:
        return f'{key}="{value}"'
    return '"' + token.replace('"', "'") + '"'


def split_parts(text: str) -> list[list[tuple[str, bool]]]:
    """Lexed tokens of each " + "-joined part."""
    parts: list[list[tuple[str, bool]]] = [[]]
    for tok, quoted in lex(text):
        if tok == "+" and not quoted:
            parts.append([])
        else:
            parts[-1].append((tok, quoted))
    return parts


# value parsers


def parse_steps(value: str, spec: str = "") -> tuple[int, ...] | None:
    """ "0-13" / "0,2,4-6" -> sorted step indices; "all" or "*" -> None (every step)."""
    v = value.strip().replace(" ", "")
    if v in ("all", "*", ""):
        return None
    if not _STEPS_RE.match(v):
        raise spec_error(spec, f"steps={value!r} is not like 0-13 or 0,2,4-6")
    out: set[int] = set()
    for part in v.split(","):
        a, _, b = part.partition("-")
        lo, hi = int(a), int(b or a)
        if hi < lo:
            raise spec_error(spec, f"steps range {part!r} runs backwards")
        out.update(range(lo, hi + 1))
    return tuple(sorted(out))


def format_steps(steps: Sequence[int] | None) -> str:
    if steps is None:
        return "all"
    steps = sorted(steps)
    runs, start, prev = [], steps[0], steps[0]
    for s in steps[1:] + [None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        runs.append(f"{start}" if start == prev else f"{start}-{prev}")
        if s is not None:
            start = prev = s
    return ",".join(runs)


def parse_categories(value: str, spec: str = "") -> tuple[str, ...]:
    out: list[str] = []
    for name in re.split(r"[,|+\s]+", value.strip().lower()):
        if not name:
            continue
        if name in CATEGORY_GROUPS:
            group = CATEGORY_GROUPS[name]
        elif name in CATEGORIES:
            group = (name,)
        else:
            raise spec_error(spec, f"unknown token category {name!r}")
        out.extend(c for c in group if c not in out)
    return tuple(c for c in CATEGORIES if c in out)  # canonical order


def format_categories(cats: Sequence[str]) -> str:
    return ",".join(cats) if cats else "none"


def parse_head(value: str, spec: str = "") -> tuple[int, int]:
    m = _HEAD_RE.match(value)
    if not m:
        raise spec_error(spec, f"{value!r} is not a head; write LAYER.HEAD, e.g. 2.8")
    return int(m[1]), int(m[2])


def check_head(
    spec: Intervention | str, layer: int, head: int, num_layers: int, num_heads: int
) -> None:
    if not (0 <= layer < num_layers and 0 <= head < num_heads):
        raise spec_error(
            str(spec), f"head {layer}.{head} is not in this model", num_layers, num_heads
        )


def check_steps(spec: Intervention | str, steps: Sequence[int] | None, n_steps: int) -> None:
    if steps is not None and steps and max(steps) >= n_steps:
        raise SpecError(
            f"bad intervention {str(spec)!r}: steps={format_steps(steps)} names step "
            f"{max(steps)} but sampling runs {n_steps} steps (0-{n_steps - 1}); lower steps= "
            "or raise --steps"
        )


def choice(value: str, options: Iterable[str], key: str, spec: str) -> str:
    options = tuple(options)
    if value not in options:
        raise spec_error(spec, f"{key}={value!r} is not one of {'|'.join(options)}")
    return value


def parse_float(value: str, key: str, spec: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise spec_error(spec, f"{key}={value!r} is not a number") from None
    if x != x or x in (float("inf"), float("-inf")):
        raise spec_error(spec, f"{key}={value!r} is not a finite number")
    return x


# parsing


def _split_args(tokens: list[tuple[str, bool]]) -> tuple[list[str], dict[str, str]]:
    positional, options = [], {}
    for tok, _quoted in tokens:
        key, eq, value = tok.partition("=")
        if eq and re.match(r"^[a-z]+$", key):
            if key in options:
                raise SpecError(f"option {key}= given twice")
            options[key] = value
        else:
            positional.append(tok)
    return positional, options


def parse_part(tokens: list[tuple[str, bool]], spec: str) -> Intervention:
    kind, positional, options = _kind_and_args(tokens, spec)
    return INTERVENTIONS[kind].load().from_args(positional, options, spec)


def _kind_and_args(tokens: list[tuple[str, bool]], spec: str) -> tuple[str, list, dict]:
    """One part's kind (one of KINDS), positional arguments and key=value options."""
    if not tokens:
        raise spec_error(spec, "empty intervention")
    kind = tokens[0][0].lower()
    if kind not in KINDS:
        raise spec_error(spec, f"unknown intervention {kind!r}")
    try:
        positional, options = _split_args(tokens[1:])
    except SpecError as e:
        raise spec_error(spec, str(e)) from None
    return kind, positional, options


def _with_model_sizes(e: SpecError, num_layers: int, num_heads: int) -> SpecError:
    """The error, ending with the model's head ranges (once)."""
    if "this model has" in str(e):
        return e
    return SpecError(f"{e}; this model has layers 0-{num_layers - 1} and heads 0-{num_heads - 1}")


def unknown_options(options: dict, allowed: Iterable[str], spec: str) -> None:
    extra = sorted(set(options) - set(allowed))
    if extra:
        raise spec_error(spec, f"unknown option {extra[0]}=")


def parse_spec(
    text: str,
    num_layers: int | None = None,
    num_heads: int | None = None,
    steps: int | None = None,
) -> Composite:
    """Parse one spec (parts joined with " + "); check it against the model when sizes given."""
    from engine.intervene.base import Composite

    if not isinstance(text, str) or not text.strip():
        raise spec_error(str(text), "empty intervention", num_layers, num_heads)
    try:
        parts = split_parts(text)
        comp = Composite(tuple(parse_part(p, text) for p in parts))
    except SpecError as e:
        if num_layers is None:
            raise
        raise _with_model_sizes(e, num_layers, num_heads) from None
    if num_layers is not None and num_heads is not None:
        comp.check(num_layers, num_heads, steps if steps is not None else 10**9)
    return comp


def _wildcard(parts, text: str, num_layers=None, num_heads=None) -> tuple[int, int, str, str]:
    """Where a sweep template's one "L.H" head with '*' is: (part, token, layer, head)."""
    hits = [
        (i, j)
        for i, part in enumerate(parts)
        for j, (tok, quoted) in enumerate(part)
        if not quoted and _WILD_RE.match(tok) and "*" in tok
    ]
    if len(hits) != 1:
        raise spec_error(
            text,
            "a sweep needs exactly one head written with '*', e.g. 'mask-head *.* "
            "tokens=relation' (every head) or 'zero-head 2.*' (every head of layer 2)",
            num_layers,
            num_heads,
        )
    i, j = hits[0]
    lw, hw = parts[i][j][0].split(".")
    return i, j, lw, hw


def expand_sweep(
    template: str, num_layers: int, num_heads: int, steps: int | None = None
) -> list[tuple[int, int, Composite]]:
    """(layer, head, spec) for every head a template's "L.H" wildcard covers ("*.*", "2.*")."""
    parts = split_parts(template)
    i, j, lw, hw = _wildcard(parts, template, num_layers, num_heads)
    layers = range(num_layers) if lw == "*" else [int(lw)]
    heads = range(num_heads) if hw == "*" else [int(hw)]
    out = []
    for layer in layers:
        for head in heads:
            new = [list(p) for p in parts]
            new[i][j] = (f"{layer}.{head}", False)
            text = " + ".join(" ".join(_quote(t) for t, _ in p) for p in new)
            out.append((layer, head, parse_spec(text, num_layers, num_heads, steps)))
    return out


def precheck(text, num_layers: int, num_heads: int, steps: int, sweep: bool = False) -> None:
    """The checks of `parse_spec` that need neither torch nor the text encoder (syntax, kinds,
    heads in range, steps, token categories, branch/attn/what), for the engine to refuse a bad
    spec before queueing a job. `parse_spec` in the job still checks everything."""
    if not isinstance(text, str) or not text.strip():
        raise spec_error(str(text), "empty intervention", num_layers, num_heads)
    try:
        parts = split_parts(text)
        if sweep:  # the wildcard head stands for every head: check the form with head 0.0
            i, j, lw, hw = _wildcard(parts, text)
            parts[i][j] = (f"{0 if lw == '*' else lw}.{0 if hw == '*' else hw}", False)
        for part in parts:
            kind, positional, options = _kind_and_args(part, text)
            if INTERVENTIONS[kind].head:
                if len(positional) != 1:
                    raise spec_error(text, "give exactly one head as LAYER.HEAD, e.g. 2.8")
                layer, head = parse_head(positional[0], text)
                check_head(text, layer, head, num_layers, num_heads)
            if "steps" in options:
                check_steps(text, parse_steps(options["steps"], text), steps)
            if "tokens" in options:
                parse_categories(options["tokens"], text)
            for key, allowed in (("branch", BRANCHES), ("attn", ATTNS), ("what", ("out", "probs"))):
                if key in options:
                    choice(options[key], allowed, key, text)
    except SpecError as e:
        raise _with_model_sizes(e, num_layers, num_heads) from None
