"""`dit-workbench ablate` and `dit-workbench variance`: interventions scored with intervals,
and the text-encoder variance decomposition."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from engine.ops.ablate import Ablate
from engine.ops.variance import Variance
from workbench.opcli import op_command
from workbench.ops import run_op
from workbench.output import FORMAT, OUT, Format, emit, format_option, rows_to_csv


def _clean(obj):
    """JSON-safe: NaN and infinities become null."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _json(obj) -> str:
    return json.dumps(_clean(obj), indent=2) + "\n"


def _print_table(tables: Table | list[Table], out: str | None) -> None:
    tables = tables if isinstance(tables, list) else [tables]
    if out:
        buf = io.StringIO()
        console = Console(file=buf, width=120, color_system=None)
    else:
        console = Console()
    if not tables:
        console.print("nothing stored yet")
    for t in tables:
        console.print(t)
    if out:
        emit(buf.getvalue(), out)


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _spct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.1f}"


def _table(title: str, first: list[str]) -> Table:
    t = Table(
        title=title,
        box=box.SIMPLE_HEAD,
        caption="values in %; bold: 95% CI excludes 0",
        pad_edge=False,
        collapse_padding=True,
    )
    for name in first:
        t.add_column(name, justify="left")
    for name in ("base", "ablated", "delta", "95% CI", "lost", "gained"):
        t.add_column(name, justify="right", no_wrap=True)
    return t


def _cells(r: dict) -> list[str]:
    sig = r["ci_low"] > 0 or r["ci_high"] < 0
    delta = _spct(r["delta"])
    return [
        _pct(r["baseline"]),
        _pct(r["intervened"]),
        f"[bold]{delta}[/]" if sig else delta,
        f"[{_spct(r['ci_low'])}, {_spct(r['ci_high'])}]",
        str(r.get("lost", "")),
        str(r.get("gained", "")),
    ]


def _ablation_tables(rows: list[dict], title: str) -> list[Table]:
    """One table per intervention (fits 80 columns)."""
    tables, current = [], None
    for r in rows:
        key = (r.get("run"), r["intervention"])
        if key != current:
            run = f" ({r['run']})" if r.get("run") else ""
            tables.append(_table(f"{r['intervention']}{run}", ["metric"]))
            current = key
        tables[-1].add_row(r["metric"], *_cells(r))
    if tables:
        tables[0].title = f"{title}\n{tables[0].title}"
        for t in tables[:-1]:
            t.caption = None
    return tables


def _sweep_table(rows: list[dict], title: str) -> Table:
    t = _table(title, ["head", "metric"])
    for r in rows:
        t.add_row(f"L{r['layer']}H{r['head']}", r["metric"], *_cells(r))
    return t


def _share(x: float) -> str:
    if math.isnan(x):
        return "-"
    v = 100 * x
    return f"{0.0 if abs(v) < 0.05 else v:.1f}"


def _check_metrics(metric: list[str] | None) -> list[str] | None:
    from engine.core.errors import UserError
    from engine.eval.evaluate import METRICS

    for m in metric or []:
        if m not in METRICS:
            raise UserError(f"unknown metric {m!r}; use one of {', '.join(METRICS)}")
    return metric or None


@op_command(Ablate)
def ablate(
    params: dict,
    metric: list[str] = typer.Option(
        None, "--metric", help="Show only this metric (repeatable); JSON keeps all."
    ),
    list_runs: bool = typer.Option(
        False,
        "--list",
        help="Print the stored ablation table (and with --sweep, the newest sweep's) instead "
        "of sampling.",
    ),
    format: Format = format_option(
        "table; csv (one row per intervention and metric); json (baseline, intervened, "
        "delta, ci_low, ci_high per metric)."
    ),
    out: str = OUT,
):
    """Run interventions against the unmodified model on paired seeds and score both.

    Reports per metric the baseline, the intervened value, the delta and a paired-bootstrap
    95% interval, plus per-sample flips (lost: correct -> wrong; gained: wrong -> correct).
    The baseline sample set is cached and reused; results go to the HDF5 cache.
    """
    metrics = _check_metrics(metric)
    sweep = params["sweep"]
    if list_runs:
        return _list(params["checkpoint"], sweep is not None, params["cache"], metrics, format, out)
    result = run_op(Ablate, params, "sweep" if sweep else "ablate")
    if format is Format.json:
        emit(_json(result), out)
        return
    if sweep:
        rows = [r for r in result["cells"] if not metrics or r["metric"] in metrics]
        columns = ["layer", "head", "metric", "baseline", "intervened", "delta", "ci_low",
                   "ci_high", "lost", "gained", "n"]  # fmt: skip
        title = f"sweep {sweep!r}: n={result['n']}, {result['sample_sets']} sample sets" + (
            f", stored as {result['run']}" if result["run"] else ""
        )
        if format is Format.csv:
            emit(rows_to_csv(rows, columns), out)
        else:
            _print_table(_sweep_table(rows, title), out)
        return
    from engine.intervene.ablate import result_rows

    rows = [r for r in result_rows(result) if not metrics or r["metric"] in metrics]
    if format is Format.csv:
        columns = ["intervention", "metric", "baseline", "intervened", "delta", "ci_low",
                   "ci_high", "lost", "gained", "n", "run"]  # fmt: skip
        emit(rows_to_csv(rows, columns), out)
        return
    base = result["baseline_run"]
    title = f"{Path(result['checkpoint']).name}: n={result['n']} samples, baseline " + (
        f"{base} ({'cached' if result['baseline_reused'] else 'new'})" if base else "not cached"
    )
    _print_table(_ablation_tables(rows, title), out)


def _list(ckpt: str, sweep: bool, cache, metrics, format: Format, out) -> None:
    from engine.intervene.ablate import ABLATION_COLUMNS, ablation_rows, sweep_rows
    from engine.model.checkpoint import store_for_path

    store = store_for_path(ckpt, cache)
    if sweep:
        rows = sweep_rows(store)
        columns = ["layer", "head", "metric", "baseline", "intervened", "delta", "ci_low",
                   "ci_high", "lost", "gained", "n", "run"]  # fmt: skip
    else:
        rows = ablation_rows(store)
        columns = [*ABLATION_COLUMNS, "lost", "gained", "created"]
    rows = [r for r in rows if not metrics or r["metric"] in metrics]
    if format is Format.json:
        emit(_json(rows), out)
    elif format is Format.csv:
        emit(rows_to_csv(rows, columns), out)
    elif sweep:
        _print_table(_sweep_table(rows, f"newest sweep in {store.path}"), out)
    else:
        _print_table(_ablation_tables(rows, f"ablations in {store.path}"), out)


_VIEWS = {
    "pooled": lambda v: v in ("all", "mean"),
    "positions": lambda v: v.startswith("pos "),
    "tokens": lambda v: v.startswith("tok "),
}


@op_command(Variance)
def variance(
    params: dict,
    view: list[str] = typer.Option(
        None,
        "--view",
        help="pooled (whole sequence, mean token), positions (each token position), tokens "
        "(each token category); repeatable; default all.",
    ),
    format: Format = FORMAT,
    out: str = OUT,
):
    """Share of the text embedding's variance explained by each caption factor.

    Factors: shape1, shape2, color (which colour words are named), relation, phrasing (within
    relation); overlap (correlated factors) and residual (non-additive) complete 100%. Before
    (encoder) and after (projected) the DiT's caption projection; per token and pooled.
    """
    from engine.core.errors import UserError
    from engine.intervene.variance import SHARES

    for v in view or []:
        if v not in _VIEWS:
            raise UserError(f"unknown --view {v!r}; use pooled, positions or tokens")
    result = run_op(Variance, params)
    rows = [r for r in result["rows"] if not view or any(_VIEWS[v](r["view"]) for v in view)]
    if format is Format.json:
        emit(_json({**result, "rows": rows}), out)
        return
    if format is Format.csv:
        emit(rows_to_csv(rows, ["stage", "view", "n", "variance", *SHARES]), out)
        return
    heads = {"shape1": "shape1", "shape2": "shape2", "color": "color", "relation": "relat",
             "phrasing": "phrase", "overlap": "overlap", "residual": "resid"}  # fmt: skip
    tables = []
    for stage in dict.fromkeys(r["stage"] for r in rows):
        what = "encoder output" if stage == "encoder" else "after the caption projection"
        t = Table(
            title=f"{Path(result['checkpoint']).name} ({result['encoder']}), {what}: % of "
            f"variance over {result['n']} prompts",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            collapse_padding=True,
        )
        for c in ("view", "n", "var", *(heads[k] for k in SHARES)):
            t.add_column(c, justify="left" if c == "view" else "right", no_wrap=True)
        for r in (r for r in rows if r["stage"] == stage):
            t.add_row(
                r["view"],
                str(r["n"]),
                f"{r['variance']:.4g}",
                *(_share(r[k]) for k in SHARES),
            )
        tables.append(t)
    if result["run"]:
        tables[-1].caption = f"stored as variance run {result['run']}"
    _print_table(tables, out)
