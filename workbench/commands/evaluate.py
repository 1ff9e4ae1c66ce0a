"""`dit-workbench evaluate DIR`: score a folder of images against the prompts they were made from."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

from engine.ops.evaluate import Evaluate
from workbench.opcli import op_command
from workbench.ops import run_op
from workbench.output import Format, dump_json, emit, format_option, out_option, rows_to_csv

_DEFINITIONS = {
    "shape": "both prompted shapes detected (any colour)",
    "color": "both prompted colours detected (any shape)",
    "exist_binding": "a (colour1, shape1) object and a (colour2, shape2) object exist",
    "unique_binding": "exactly two objects, and exactly those two",
    "spatial": "unique_binding and the centres' relation is the prompted one (5 px rule)",
    "overall": "all of the above",
    "shape_loose": "at least one prompted shape detected",
    "color_loose": "at least one prompted colour detected",
    "spatial_loose": "exist_binding and the relation's axis components hold (extras allowed)",
    "color_relation": "diagnostic: the colours' centres are in the prompted relation (no shapes)",
}


@op_command(Evaluate)
def evaluate(
    params: dict,
    format: Format = format_option(
        "table: one row per metric; json: metrics plus per-image results and detections; csv: "
        "one row per image (file_name, text, metric columns, error)."
    ),
    out: str | None = out_option("Write the output to this file instead of standard output."),
):
    """Score generated images against their prompts: shapes, colours, binding, relation.

    Objects are found by colour at any image size; partly hidden ones by occlusion-aware fits.

    Centres are compared in 128 px canvas units with the dataset's 5 px dead zone.

    A missing or undecodable image fails every metric and is reported in the output, not fatal.
    """
    from engine.eval.evaluate import METRICS, EvalResult

    res = run_op(Evaluate, params)
    folder = params["folder"]
    result = EvalResult(res["n"], res["metrics"], res["per_image"])
    if format is Format.json:
        emit(dump_json(result.to_dict()), out)
        return
    if format is Format.csv:
        columns = ["file_name", "text", *METRICS, "error"]
        emit(rows_to_csv(result.rows(), columns), out)
        return
    table = Table(
        title=f"{folder}: {result.n} images"
        + (f", {result.n_errors} unreadable (counted as failures)" if result.n_errors else ""),
    )
    for name, justify in (("metric", "left"), ("score", "right"), ("passed", "right")):
        table.add_column(name, justify=justify)
    table.add_column("meaning")
    for m in METRICS:
        passed = sum(bool(r[m]) for r in result.per_image)
        table.add_row(m, f"{result.metrics[m]:.4f}", f"{passed}/{result.n}", _DEFINITIONS[m])
    if out:
        buf = io.StringIO()
        Console(file=buf, width=120, color_system=None).print(table)
        emit(buf.getvalue(), out)
    else:
        Console().print(table)
