"""`dit-workbench dataset ...`: render the synthetic two-object dataset, list its phrasings."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from workbench.output import Format, dump_json, print_rows, rows_to_csv

app = typer.Typer(help="The paper's synthetic two-object dataset.", no_args_is_help=True)


@app.command()
def render(
    out: Path = typer.Argument(
        ..., help="New folder to write (an imagefolder: PNGs + metadata.jsonl)."
    ),
    n: int = typer.Option(10000, "--n", help="Number of scenes (the paper trains on 10k)."),
    seed: int = typer.Option(0, "--seed", help="Dataset seed; scene i is drawn from (seed, i)."),
    size: int = typer.Option(
        128, "--size", help="Image side in pixels; the 128 px scene is scaled."
    ),
    hdf5: bool = typer.Option(
        False, "--hdf5", help="Also write dataset.h5 (uint8 images + records) for fast training."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output folder."),
):
    """Render N scenes with captions into OUT, deterministically from SEED."""
    from engine.data.files import check_render_args, write_dataset

    check_render_args(out, n, size, overwrite)
    with Progress(
        TextColumn("rendering"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task("render", total=max(n, 0))
        write_dataset(out, n, seed, size, hdf5, overwrite, progress=lambda k: bar.advance(task, k))
    typer.echo(f"wrote {n} images to {out}" + (" and dataset.h5" if hdf5 else ""))


@app.command()
def phrasings(
    format: Format = typer.Option(Format.table, "--format", help="table, csv or json."),
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
    format: Format = typer.Option(Format.table, "--format", help="table, csv or json."),
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
