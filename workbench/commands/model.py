"""`dit-workbench train | sample | info | export`: models, training and sampling."""

from __future__ import annotations

import json
import sys

import typer

from engine.core.settings import settings
from engine.ops.export import Export
from engine.ops.info import Info
from engine.ops.sample import Sample
from engine.ops.train import Train
from workbench.opcli import op_command
from workbench.ops import build_op, run_op
from workbench.output import FORMAT, Format, dump_json, print_rows, rows_to_csv


@op_command(Train)
def train(params: dict):
    """Train a DiT on the two-object dataset (accelerate: `accelerate launch -m workbench.cli train ...` for many GPUs)."""
    op = build_op(Train, params)
    with _TrainReporter(op.steps) as report:
        op.run(report)
    if settings().rank == 0:
        typer.echo(f"done: {params['out']}/latest", err=True)


class _TrainReporter:
    """The loop's records as a rich progress bar on a terminal, JSON lines otherwise (logs,
    nohup); under accelerate/torchrun only rank 0 reports."""

    def __init__(self, total: int):
        self._total, self._bar = total, None
        self._on = lambda rec: None

    def __enter__(self):
        if settings().rank != 0:
            return self
        if not sys.stdout.isatty():
            self._on = lambda rec: print(json.dumps(rec), flush=True)
            return self
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        console = Console()
        bar = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
        )
        task = bar.add_task("train", total=self._total, info="")
        bar.start()
        self._bar = bar

        def on(rec: dict):
            if rec.get("event") == "checkpoint":
                keys = ("color", "shape", "exist_binding", "spatial")
                console.print(
                    f"checkpoint step {rec['step']}: "
                    + " ".join(f"{k}={rec.get(k, 0):.2f}" for k in keys)
                )
            else:
                info = f"loss {rec['loss']:.4f}  {rec['img_per_s']:.0f} img/s"
                bar.update(task, completed=rec["step"], info=info)

        self._on = on
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()

    def record(self, rec: dict) -> None:
        self._on(rec)

    def progress(self, fraction: float, phase: str | None = None, eta_s: float | None = None):
        pass  # the bar follows the records, which carry the step

    def log(self, line: str) -> None:
        pass  # the records say it all, as JSON lines or on the bar


@op_command(Sample)
def sample(params: dict):
    """Sample images from a checkpoint into an image folder that `evaluate` reads."""
    res = run_op(Sample, params)
    typer.echo(f"wrote {res['images']} images to {res['out']}")


@op_command(Info)
def info(params: dict, format: Format = FORMAT):
    """Say what a checkpoint is: preset, shape, text encoder, codec, resolution, step, hash."""
    d = run_op(Info, params)
    if format is Format.json:
        typer.echo(dump_json(d), nl=False)
    elif format is Format.csv:
        typer.echo(rows_to_csv([d]), nl=False)
    else:
        print_rows([{"field": k, "value": v} for k, v in d.items()], title="checkpoint")


@op_command(Export)
def export(params: dict):
    """Copy a checkpoint without its training state (EMA weights, encoder, metadata), e.g. to
    ship it; the copy has its own hash, so its cache is its own. `--step N` picks a step of a
    run's kept history (or give RUN/history/step-NNNNNNN directly)."""
    d = run_op(Export, params)
    typer.echo(
        f"exported {d['path']} (step {d['step']}, {d['text']}, sha256 {d['transformer_sha256']})"
    )
