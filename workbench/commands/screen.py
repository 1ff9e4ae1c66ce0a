"""`dit-workbench screen CKPT`: weight-space screening of every cross-attention head.

Ranks head x relation by how closely the head's query/key weights turn position into a ramp in
the relation word's direction (engine/probe/screening/ has the method and its approximation,
engine/ops/screen.py the operation); `--map L.H` draws one map beside its reference ramp;
`--compare` measures the agreement with a sampling-based synopsis ranking stored for the same
checkpoint.
"""

from __future__ import annotations

import math

from engine.ops.screen import Screen
from workbench.opcli import op_command
from workbench.ops import run_op
from workbench.output import FORMAT, OUT, Format, dump_json, emit, rows_to_csv


@op_command(Screen)
def screen(params: dict, format: Format = FORMAT, out: str = OUT):
    """Screen every cross-attention head x relation from the weights alone (under a second).

    Queries are the 2D sin-cos position features the model adds to its patches, through each head's to_q; keys are each relation word (in template captions, after the caption projection) through to_k. Their scaled products give an 8x8 map per head and relation, scored against the relation's reference ramp.

    Results are stored in the checkpoint's HDF5 cache (kind "screening") with provenance, and reused when the same screening is asked again.
    """
    res = run_op(Screen, params)
    relation, metric, query = params["relation"], params["metric"], params["query"]
    where = (
        f"screening run {res['run']} in {res['cache']}"
        if res["cache"]
        else "not stored (--no-cache)"
    )
    if "maps" in res:
        return _print_map(res, relation, format, out, where)
    if "compare" in res:
        return _print_compare(res, relation, metric, query, format, out)
    if params["best"]:
        title = f"heads ranked by mean {metric} over relations"
    elif params["tokens"]:
        title = f"relation tokens ranked by {metric}"
    else:
        title = f"head x relation ranked by {metric}"
    _print_rows(res, title, where, format, out)


# --- helpers --------------------------------------------------------------------------------


def _clean(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def _print_rows(res, title, where, format, out):
    rows = res["rows"]
    if format is Format.csv:
        emit(rows_to_csv(rows), out)
        return
    if format is Format.json:
        emit(dump_json(_clean({"run": res["run"], "rows": rows, "params": res["params"]})), out)
        return
    from rich import box
    from rich.table import Table

    t = Table(title=title, box=box.SIMPLE_HEAD, caption=where, padding=(0, 1))
    # the phrase is in csv/json; the table keeps to 80 columns
    cols = [c for c in (list(rows[0]) if rows else []) if c != "phrase"]
    for c in cols:
        numeric = c not in ("relation", "best_relation", "phrase", "token")
        t.add_column(c, justify="right" if numeric else "left", no_wrap=True)
    for r in rows:
        t.add_row(*(_cell(r[c]) for c in cols))
    _print_renderables([t], out)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:+.3f}"
    return str(v)


def _print_renderables(items, out):
    import io

    from rich.console import Console

    if out:
        buf = io.StringIO()
        console = Console(file=buf, width=120, color_system=None)
    else:
        console = Console()
    for it in items:
        console.print(it)
    if out:
        emit(buf.getvalue(), out)


# --map


_ASCII = " .:-=+*#%@"


def heatmap(values, lo: float, hi: float, color: bool):
    """An 8x8 (any) map as rich Text lines: two columns per cell; red high, blue low.

    Without colour (a pipe or a file), cells are characters from light to dark.
    """
    from rich.text import Text

    lines = []
    span = hi - lo if hi > lo else 1.0
    for row in values:
        t = Text()
        for v in row:
            f = min(max((v - lo) / span, 0.0), 1.0)  # 0 .. 1
            if color:
                t.append("  ", style=f"on {_diverging(2 * f - 1)}")
            else:
                t.append(_ASCII[min(int(f * len(_ASCII)), len(_ASCII) - 1)] * 2)
        lines.append(t)
    return lines


def _diverging(x: float) -> str:
    """-1 blue .. 0 near-white .. +1 red, as #rrggbb."""
    x = min(max(x, -1.0), 1.0)
    white = (235, 235, 235)
    end = (200, 30, 30) if x >= 0 else (30, 70, 200)
    a = abs(x)
    rgb = [round(w + (e - w) * a) for w, e in zip(white, end, strict=True)]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _print_map(res, relation, format, out, where):
    details = res["maps"]
    layer, h = details[0]["layer"], details[0]["head"]
    if format is Format.json:
        emit(dump_json(_clean({"run": res["run"], "maps": details})), out)
        return
    if format is Format.csv:
        rows = [
            {
                "layer": layer,
                "head": h,
                "relation": d["relation"],
                "y": y,
                "x": x,
                "qk": d["qk"][y][x],
                "reference": d["reference"][y][x],
            }
            for d in details
            for y in range(len(d["qk"]))
            for x in range(len(d["qk"][0]))
        ]
        emit(rows_to_csv(rows), out)
        return
    from rich.console import Console
    from rich.text import Text

    color = not out and Console().color_system in ("256", "truecolor")
    items = []
    for d in details:
        qk, ref = d["qk"], d["reference"]
        lo, hi = min(map(min, qk)), max(map(max, qk))
        w = 2 * len(qk[0])
        left = heatmap(qk, lo, hi, color)
        right = heatmap(ref, -1.0, 1.0, color)
        head_line = Text(
            f"L{layer}H{h} · {d['relation']} ('{' | '.join(d['phrases'])}')", style="bold"
        )
        labels = Text("QK map".ljust(w) + "   " + f"ramp '{d['relation']}'")
        items.append(head_line)
        items.append(labels)
        for a, b in zip(left, right, strict=True):
            items.append(Text.assemble(a, "   ", b))
        items.append(
            Text(
                f"cosine {d['cosine']:+.3f}  projection {d['projection']:+.3f}  energy "
                f"{d['energy']:+.3f}\nlogits {lo:+.3f} .. {hi:+.3f}; fitted ramp points "
                f"{d['fitted_direction']} ({d['fitted_angle_deg']:+.0f}°, 90° = up)\n",
                style="dim",
            )
        )
    legend = "red: higher logit (attends more to the word), blue: lower; row 0 = top of the image"
    if not color:
        legend = f"'{_ASCII[1]}' low .. '{_ASCII[-1]}' high logit; row 0 = top of the image"
    items.append(Text(f"{legend}\n{where}", style="dim"))
    _print_renderables(items, out)


# --compare


def _print_compare(result, relation, metric, query, format, out):
    res = result["compare"]
    fmt_top = lambda hs: " ".join(f"{a}.{b}" for a, b in hs)  # noqa: E731
    row = {
        "screening_run": result["run"] or "",
        "synopsis_run": res["synopsis_run"],
        "query": query,
        "relation": relation,
        "metric": metric,
        "n_heads": res["n_heads"],
        "spearman": res["spearman"],
        "k": res["k"],
        "topk_overlap": res["topk_overlap"],
        "topk_chance": res["topk_chance"],
        "top_screening": fmt_top(res["top_a"]),
        "top_synopsis": fmt_top(res["top_b"]),
    }
    if format is Format.csv:
        emit(rows_to_csv([row]), out)
        return
    if format is Format.json:
        emit(
            dump_json(_clean({**row, "top_screening": res["top_a"], "top_synopsis": res["top_b"]})),
            out,
        )
        return
    from rich import box
    from rich.table import Table

    t = Table(title="screening vs synopsis ranking", box=box.SIMPLE_HEAD, show_header=False)
    t.add_column("field")
    t.add_column("value")
    for key, v in row.items():
        t.add_row(
            key,
            "-"
            if isinstance(v, float) and math.isnan(v)
            else (f"{v:+.3f}" if isinstance(v, float) else str(v)),
        )
    _print_renderables([t], out)
