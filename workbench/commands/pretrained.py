"""`dit-workbench import-pipeline DIR --out CKPT`: a local diffusers PixArt pipeline as a
checkpoint (weights stay where they are; see docs/pretrained.md)."""

from __future__ import annotations

import typer

from engine.ops.pipeline import ImportPipeline
from workbench.opcli import op_command
from workbench.ops import run_op


@op_command(ImportPipeline)
def import_pipeline(params: dict):
    """Make a local PixArt pipeline folder a checkpoint the workbench opens, without copying
    its weights: parts referenced by absolute path with their sha256, sizes and latent shape
    from its configs, its own scheduler for sampling."""
    res = run_op(ImportPipeline, params, verbose=True)  # "hashing part/file" lines on stderr
    meta, g = res["meta"], res["meta"]["grid"]
    typer.echo(
        f"imported {meta['pipeline']['class']} from {meta['pipeline']['path']} into "
        f"{res['path']}: {meta['res']} px, latent {'x'.join(map(str, meta['latent']))}, grid "
        f"{g[0]}x{g[1]}, transformer sha256 {meta['hashes']['transformer'][:16]}"
    )
