"""render: the paper's synthetic two-object dataset, rendered into an image folder (CPU)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.core import limits
from engine.core.limits import Bound
from engine.ops.base import Operation, param
from engine.ops.params import Reporter


@dataclass
class Render(Operation):
    kind = "render"
    heavy = False
    help = "render N scenes with captions into a new image folder (dit-workbench dataset render)"

    out: str = param(path=True, argument="OUT",
                     help="New folder to write (an imagefolder: PNGs + metadata.jsonl).")  # fmt: skip
    n: int = param(10000, bound=Bound(1, limits.MAX_RENDER_SCENES, integer=True),
                   help="Number of scenes (the paper trains on 10k).")  # fmt: skip
    seed: int = param(0, bound=limits.SEED, help="Dataset seed; scene i is drawn from (seed, i).")
    size: int = param(128, bound=Bound(None, limits.MAX_RENDER_SIZE, integer=True),
                      help="Image side in pixels; the 128 px scene is scaled.")  # fmt: skip
    hdf5: bool = param(False,
                       help="Also write dataset.h5 (uint8 images + records) for fast training.")  # fmt: skip
    overwrite: bool = param(False, help="Replace a non-empty output folder.")

    def check(self, cwd: str | None) -> None:
        from engine.data.files import check_render_args

        check_render_args(self.out, self.n, self.size, self.overwrite)

    def run(self, report: Reporter) -> dict:
        from engine.data.files import write_dataset

        done = 0

        def step(k: int) -> None:
            nonlocal done
            done += k
            report.progress(done / self.n, "render")

        write_dataset(self.out, self.n, self.seed, self.size, self.hdf5, self.overwrite,
                      progress=step)  # fmt: skip
        return {"out": self.out, "images": self.n, "hdf5": self.hdf5}
