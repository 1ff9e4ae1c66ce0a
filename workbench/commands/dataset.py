"""`dit-workbench dataset ...`: render the synthetic two-object dataset, list its phrasings."""

from __future__ import annotations

import typer

from engine.ops.render import Render
from workbench.opcli import op_command
from workbench.ops import run_op
from workbench.output import FORMAT, Format, dump_json, print_rows, rows_to_csv

app = typer.Typer(help="The paper's synthetic two-object dataset.", no_args_is_help=True)


@app.command()
@op_command(Render)
def render(params: dict):
    """Render N scenes with captions into OUT, deterministically from SEED."""
    res = run_op(Render, params, "rendering")
    typer.echo(f"wrote {res['images']} images to {params['out']}"
               + (" and dataset.h5" if res["hdf5"] else ""))  # fmt: skip


@app.command()
def phrasings(
    format: Format = FORMAT,
):
    """List the relation phrasings captions use (22, as in the paper)."""
    from engine.data.relations import ALL_PHRASES

    rows = [{"relation": rel, "phrase": p} for p, rel in ALL_PHRASES]
    if format is Format.table:
        print_rows(rows, title="relation phrasings")
    elif format is Format.csv:
        typer.echo(rows_to_csv(rows), nl=False)
    else:
        typer.echo(dump_json(rows), nl=False)


@app.command("eval-prompts")
def eval_prompts_cmd(
    format: Format = FORMAT,
):
    """List the fixed evaluation prompt set (6 shape pairs x 22 phrasings x colours named or not)."""
    from engine.data.prompts import eval_prompts

    rows = [
        {"text": p.text, "shape1": p.shape1, "shape2": p.shape2, "relation": p.relation}
        for p in eval_prompts()
    ]
    if format is Format.table:
        print_rows(rows, title=f"evaluation prompts ({len(rows)})")
    elif format is Format.csv:
        typer.echo(rows_to_csv(rows), nl=False)
    else:
        typer.echo(dump_json(rows), nl=False)
