"""Row filtering and sorting with the engine's semantics, for tables held on the client side.

The engine sorts, filters and pages its tables itself; this module is the same logic for rows the
TUI already holds (the jobs list) and for the fake engine used by the tests.

Filter syntax (whitespace-separated terms, all must match; quote a term to keep its spaces):

- ``word``          a cell of any column contains ``word`` (case-insensitive);
- ``col=value``     equal (numbers compared as numbers, text case-insensitively);
- ``col!=value``    not equal;
- ``col>v`` ``col>=v`` ``col<v`` ``col<=v``  numeric comparison;
- ``col~text``      the cell contains ``text``.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence
from typing import Any

FILTER_HELP = (
    "word = any cell contains it · col=v col!=v col>v col>=v col<v col<=v · "
    "col~text = contains · terms are ANDed · empty clears"
)

_TERM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(>=|<=|!=|=|>|<|~)(.*)$")


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


class FilterError(ValueError):
    """A filter the user typed cannot be understood; the message says why."""


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def cell_text(v: Any) -> str:
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
    if a is None or b is None:
        return False
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]


def parse_filter(text: str | None, columns: Sequence[str]) -> list[tuple[int | None, str, str]]:
    """Terms as (column index or None for any-cell, op, value); raises FilterError."""
    if not text or not text.strip():
        return []
    try:
        parts = shlex.split(text)
    except ValueError as e:
        raise FilterError(f"cannot read filter {text!r}: {e}; close the quote") from e
    terms: list[tuple[int | None, str, str]] = []
    for part in parts:
        m = _TERM.match(part)
        if m:
            col, op, val = m.groups()
            if col not in columns:
                raise FilterError(
                    f"unknown column {col!r} in filter; columns are: {', '.join(columns)}"
                )
            if op in (">", ">=", "<", "<=") and _num(val) is None:
                raise FilterError(f"{part!r}: {op} needs a number, e.g. {col}{op}0.5")
            terms.append((list(columns).index(col), op, val))
        else:
            terms.append((None, "~", part))
    return terms


def filter_rows(rows: list[list], columns: Sequence[str], text: str | None) -> list[list]:
    terms = parse_filter(text, columns)
    if not terms:
        return list(rows)

    def keep(row: list) -> bool:
        for idx, op, val in terms:
            if idx is None:
                needle = val.lower()
                if not any(needle in cell_text(c).lower() for c in row):
                    return False
            elif not _compare(row[idx], op, val):
                return False
        return True

    return [r for r in rows if keep(r)]


def sort_rows(rows: list[list], columns: Sequence[str], sort: str | None, desc: bool) -> list[list]:
    """Stable sort by one column; missing values (None, NaN) always last."""
    if not sort:
        return list(rows)
    if sort not in columns:
        raise FilterError(
            f"cannot sort by unknown column {sort!r}; columns are: {', '.join(columns)}"
        )
    i = list(columns).index(sort)

    def missing(v: Any) -> bool:
        return v is None or (isinstance(v, float) and math.isnan(v))

    present = [r for r in rows if not missing(r[i])]
    absent = [r for r in rows if missing(r[i])]

    def key(r: list):
        v = r[i]
        n = _num(v) if not isinstance(v, str) else None
        return (0, n, "") if n is not None else (1, 0.0, cell_text(v).lower())

    present.sort(key=key, reverse=desc)
    return present + absent
