"""info: what a checkpoint is (preset, shape, text encoder, codec, resolution, step, hash), and
the device commands would run it on. Reads its metadata and configs, not its weights."""

from __future__ import annotations

from dataclasses import dataclass

from engine.ops.base import Operation, param
from engine.ops.params import Reporter


@dataclass
class Info(Operation):
    kind = "info"
    heavy = False
    help = "describe a checkpoint (dit-workbench info)"

    checkpoint: str = param(argument="CKPT", aliases=("ckpt",),
                            help="Checkpoint folder or training run folder.")  # fmt: skip

    def run(self, report: Reporter) -> dict:
        from engine.core import device as D
        from engine.model.checkpoint import describe

        d = describe(self.checkpoint)
        d["device"] = D.label(D.describe("auto"))  # where commands run it with --device auto
        return d
