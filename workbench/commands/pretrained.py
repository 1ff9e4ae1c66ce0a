"""`dit-workbench import-pipeline DIR --out CKPT`: a local diffusers PixArt pipeline as a
checkpoint (weights stay where they are; see docs/pretrained.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def import_pipeline(
    directory: Path = typer.Argument(
        ..., help="A local diffusers PixArt-alpha / PixArt-Sigma pipeline folder."
    ),
    out: Path = typer.Option(..., "--out", help="New checkpoint folder (holds workbench.json)."),
):
    """Make a local PixArt pipeline folder a checkpoint the workbench opens, without copying
    its weights: parts referenced by absolute path with their sha256, sizes and latent shape
    from its configs, its own scheduler for sampling."""
    from engine.model.pipeline import import_pipeline as run

    def progress(part: str, name: str) -> None:
        typer.echo(f"hashing {part}/{name}", err=True)

    path = run(directory, out, progress=progress)
    meta = json.loads((path / "workbench.json").read_text())
    g = meta["grid"]
    typer.echo(
        f"imported {meta['pipeline']['class']} from {meta['pipeline']['path']} into {path}: "
        f"{meta['res']} px, latent {'x'.join(map(str, meta['latent']))}, grid {g[0]}x{g[1]}, "
        f"transformer sha256 {meta['hashes']['transformer'][:16]}"
    )
