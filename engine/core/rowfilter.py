"""The filter and sort language of tables: one definition for the engine, which sorts, filters
and pages the tables it serves (engine.service.tables), and for the TUI, which does the same to
rows it already holds (the jobs list). Standard library only, so the TUI imports it cheaply.

Filter syntax: whitespace-separated terms, all of which must hold. `col=value` and
`col!=value` compare numbers as numbers and text case-insensitively; `col>x`, `col>=x`,
`col<x`, `col<=x` compare numbers; `col~text` tests that the cell contains text; any other
term must be a case-insensitive substring of some cell. Quote a term with spaces:
`"red circle" layer>=3`. An unknown column or a non-numeric bound is a FilterError.

Sorting is stable, numbers before text, with missing cells (None, NaN) last either way.
"""

from __future__ import annotations

import math
import operator
import re
import shlex
from collections.abc import Sequence
from typing import Any

from engine.core.errors import UserError

FILTER_HELP = (
    "word = any cell contains it · col=v col!=v col>v col>=v col<v col<=v · "
    "col~text = contains · terms are ANDed · empty clears"
)

_TERM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(>=|<=|!=|=|>|<|~)(.*)$")
_ORDER = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}

Term = tuple[int | None, str, str]


class FilterError(UserError):
    """A filter or sort the user typed cannot be understood; the message says why. A UserError,
    so the engine answers it with a 400 and the CLI prints it without a traceback."""


def _num(v: Any) -> float | None:
    if isinstance(v, bool | int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def cell_text(v: Any) -> str:
    """A cell as the filter sees it (floats to 6 significant digits)."""
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _compare(cell: Any, op: str, want: str) -> bool:
    if op == "~":
        return want.lower() in cell_text(cell).lower()
    a, b = _num(cell), _num(want)
    if op in ("=", "!="):
        if a is not None and b is not None:
            eq = math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
        else:
            eq = cell_text(cell).lower() == want.lower()
        return eq if op == "=" else not eq
    return a is not None and b is not None and _ORDER[op](a, b)


def parse_filter(text: str | None, columns: Sequence[str]) -> list[Term]:
    """Terms as (column index, or None for any cell, op, value); FilterError if unreadable."""
    if not text or not text.strip():
        return []
    try:
        parts = shlex.split(text)
    except ValueError as e:
        raise FilterError(f"cannot read filter {text!r}: {e}; close the quote") from None
    columns = list(columns)
    terms: list[Term] = []
    for part in parts:
        m = _TERM.match(part)
        if not m:
            terms.append((None, "~", part))
            continue
        col, op, val = m.groups()
        if col not in columns:
            raise FilterError(
                f"unknown column {col!r} in filter; columns are: {', '.join(columns)}"
            )
        if op in _ORDER and _num(val) is None:
            raise FilterError(f"{part!r}: {op} needs a number, e.g. {col}{op}0.5")
        terms.append((columns.index(col), op, val))
    return terms


def filter_rows(rows: list[list], columns: Sequence[str], text: str | None) -> list[list]:
    """The rows every term of the filter `text` holds for (all rows for an empty filter)."""
    terms = parse_filter(text, columns)
    if not terms:
        return list(rows)

    def keep(row: list) -> bool:
        for i, op, val in terms:
            if i is None:
                needle = val.lower()
                if not any(needle in cell_text(c).lower() for c in row):
                    return False
            elif not _compare(row[i], op, val):
                return False
        return True

    return [r for r in rows if keep(r)]


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def sort_rows(rows: list[list], columns: Sequence[str], sort: str | None, desc: bool) -> list[list]:
    """Stable sort by one column (none: the rows as they are); missing cells always last."""
    if not sort:
        return list(rows)
    if sort not in columns:
        raise FilterError(f"cannot sort by {sort!r}; columns are: {', '.join(columns)}")
    i = list(columns).index(sort)

    def key(r: list):
        v = r[i]
        n = _num(v) if not isinstance(v, str) else None
        return (0, n, "") if n is not None else (1, 0.0, cell_text(v).lower())

    present = sorted((r for r in rows if not _missing(r[i])), key=key, reverse=desc)
    return present + [r for r in rows if _missing(r[i])]


# A header label may differ from its column (`L` for layer, `Δablate` for ablation_delta): the
# TUI lets the user filter by what they see and sends the engine the column names.
_NAMED = re.compile(r"^([^\s<>=!~]+)(>=|<=|!=|=|>|<|~)(.*)$")


def translate_names(text: str, names: dict[str, str], columns: Sequence[str] = ()) -> str:
    """`text` with header names (`L<3`, `Δablate<0`, `CI95<0`) replaced by the engine columns
    they show (`names`: label without spaces -> column; case-insensitive). A name that is a
    column itself is left alone; text that does not split is returned as it is (the engine then
    says what is wrong)."""
    lower = {k.lower(): v for k, v in names.items()}
    cols = set(columns)
    try:
        terms = shlex.split(text)
    except ValueError:
        return text
    out, changed = [], False
    for term in terms:
        m = _NAMED.match(term)
        if m and m.group(1) not in cols and m.group(1).lower() in lower:
            term = lower[m.group(1).lower()] + m.group(2) + m.group(3)
            changed = True
        out.append(term)
    if not changed:
        return text
    return " ".join(shlex.quote(t) if re.search(r"\s", t) else t for t in out)
