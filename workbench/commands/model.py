"""`dit-workbench train | sample | info | export`: models, training and sampling."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from engine.core.device import DEVICE_HELP
from engine.core.settings import settings
from workbench.ops import build_op, run_op
from workbench.output import Format, dump_json, print_rows

# Where an option's name is not the parameter's (errors name what the user typed).
SAMPLE_OPTIONS = {"checkpoint": "CKPT", "prompts": "--prompt"}


def train(
    out: Path = typer.Option(
        ..., "--out", help="Run folder: checkpoints step-N/, `latest` link, metrics.jsonl."
    ),
    preset: str = typer.Option(
        "micro",
        "--preset",
        help="dit-b (12/12/768), mini (6/6/384), micro (6/3/192), nano (3/3/192).",
    ),
    text: str = typer.Option("rte", "--text", help="rte, rte-nopos, minilm or t5:<local dir>."),
    codec: str = typer.Option("pixel", "--codec", help="pixel, or vae:<local AutoencoderKL dir>."),
    res: int = typer.Option(
        32, "--res", help="Image side in pixels (the token grid is always 8x8)."
    ),
    steps: int = typer.Option(
        1000, "--steps", help="Optimiser steps in total (a resumed run continues to this)."
    ),
    batch: int = typer.Option(64, "--batch", help="Global batch size (split across processes)."),
    lr: float = typer.Option(1e-4, "--lr", help="AdamW learning rate (paper: 1e-4)."),
    weight_decay: float = typer.Option(
        0.03, "--weight-decay", help="AdamW weight decay (paper: 0.03)."
    ),
    ema_decay: float = typer.Option(
        0.9999, "--ema-decay", help="Largest EMA decay (warmed up from 0)."
    ),
    eval_every: int = typer.Option(
        500, "--eval-every", help="Checkpoint and evaluate every K steps."
    ),
    eval_prompts: int = typer.Option(
        32, "--eval-prompts", help="Prompts sampled at each checkpoint for metrics.jsonl."
    ),
    n_train: int = typer.Option(10000, "--n-train", help="Training scenes (paper: 10k)."),
    data_seed: int = typer.Option(0, "--data-seed", help="Dataset seed."),
    seed: int = typer.Option(0, "--seed", help="Seed for init, noise and the text encoder."),
    keep: int = typer.Option(
        3, "--keep", help="Checkpoints kept (oldest removed; metrics.jsonl keeps every one)."
    ),
    keep_history: bool = typer.Option(
        False,
        "--keep-history",
        help="Also keep every checkpoint's EMA weights as float16 in RUN/history/step-N/ "
        "(never pruned; for `dit-workbench emergence`).",
    ),
    mixed_precision: str = typer.Option(
        "auto", "--mixed-precision", help="no, bf16 or fp16; auto = bf16 on GPU, no on CPU."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its latest checkpoint."
    ),
    init_from: Path = typer.Option(
        None,
        "--init-from",
        help="Start from this checkpoint's weights and text encoder (fresh optimiser, data order).",
    ),
    device: str = typer.Option(
        "auto", "--device", help=DEVICE_HELP + " Under accelerate launch: auto or cuda."
    ),
    compile: bool = typer.Option(
        False, "--compile", help="torch.compile the model (CUDA: faster steps after warm-up)."
    ),
    log_every: int = typer.Option(
        10, "--log-every", help="Steps between loss/throughput lines (the only host syncs)."
    ),
):
    """Train a DiT on the two-object dataset (accelerate: `accelerate launch -m workbench.cli train ...` for many GPUs)."""
    from engine.ops.train import Train

    params = dict(out=str(out), preset=preset, text=text, codec=codec, res=res, steps=steps,
                  batch=batch, lr=lr, weight_decay=weight_decay, ema_decay=ema_decay,
                  eval_every=eval_every, eval_prompts=eval_prompts, n_train=n_train,
                  data_seed=data_seed, seed=seed, keep=keep, keep_history=keep_history,
                  mixed_precision=mixed_precision, resume=resume,
                  init_from=str(init_from) if init_from else None, device=device,
                  compile=compile, log_every=log_every)  # fmt: skip
    op = build_op(Train, params)
    with _TrainReporter(steps) as report:
        op.run(report)
    if settings().rank == 0:
        typer.echo(f"done: {out}/latest", err=True)


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


def sample(
    ckpt: Path = typer.Argument(
        ..., help="Checkpoint folder (or a training run folder: uses `latest`)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="New folder for the images (imagefolder with metadata.jsonl)."
    ),
    prompt: list[str] = typer.Option(None, "--prompt", help="A caption; repeat for several."),
    prompts_file: Path = typer.Option(
        None, "--prompts-file", help="Text file, one caption per line."
    ),
    eval_set: bool = typer.Option(False, "--eval-set", help="The fixed 264-prompt evaluation set."),
    n: int = typer.Option(1, "--n", help="Images per prompt (seeds SEED .. SEED+N-1)."),
    seed: int = typer.Option(
        0, "--seed", help="First seed; each image's noise comes from (prompt, seed)."
    ),
    steps: int = typer.Option(14, "--steps", help="DPM-Solver++ steps (paper: 14)."),
    cfg: float = typer.Option(4.5, "--cfg", help="Classifier-free guidance scale (paper: 4.5)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per forward pass."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output folder."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
):
    """Sample images from a checkpoint into an image folder that `evaluate` reads."""
    from engine.ops.sample import Sample

    params = dict(checkpoint=str(ckpt), out=str(out), prompts=prompt or None,
                  prompts_file=str(prompts_file) if prompts_file else None, eval_set=eval_set,
                  n=n, seed=seed, steps=steps, cfg=cfg, batch_size=batch_size,
                  overwrite=overwrite, device=device)  # fmt: skip
    res = run_op(Sample, params, options=SAMPLE_OPTIONS)
    typer.echo(f"wrote {res['images']} images to {res['out']}")


def info(
    ckpt: Path = typer.Argument(..., help="Checkpoint folder or training run folder."),
    format: Format = typer.Option(Format.table, "--format", help="table, csv or json."),
):
    """Say what a checkpoint is: preset, shape, text encoder, codec, resolution, step, hash."""
    from engine.core import device as D
    from engine.model.checkpoint import describe

    d = describe(ckpt)
    d["device"] = D.label(D.describe("auto"))  # where commands run it with --device auto
    if format is Format.json:
        typer.echo(dump_json(d), nl=False)
    elif format is Format.csv:
        from workbench.output import rows_to_csv

        typer.echo(rows_to_csv([d]), nl=False)
    else:
        print_rows([{"field": k, "value": v} for k, v in d.items()], title="checkpoint")


def export(
    ckpt: Path = typer.Argument(..., help="Checkpoint folder or training run folder."),
    out: Path = typer.Option(..., "--out", help="New folder for the exported checkpoint."),
    fp16: bool = typer.Option(
        False, "--fp16", help="Store the transformer in float16 (half the size; loads as float32)."
    ),
    step: int = typer.Option(
        None,
        "--step",
        help="With a run folder: the checkpoint of this step from the run's kept history "
        "(RUN/history/step-N/, see train --keep-history) or a full checkpoint still kept.",
    ),
):
    """Copy a checkpoint without its training state (EMA weights, encoder, metadata), e.g. to
    ship it; the copy has its own hash, so its cache is its own. `--step N` picks a step of a
    run's kept history (or give RUN/history/step-NNNNNNN directly)."""
    from engine.ops.export import Export
    from workbench.ops import run_op

    d = run_op(Export, {"checkpoint": str(ckpt), "out": str(out), "fp16": fp16, "step": step})
    typer.echo(
        f"exported {d['path']} (step {d['step']}, {d['text']}, sha256 {d['transformer_sha256']})"
    )
