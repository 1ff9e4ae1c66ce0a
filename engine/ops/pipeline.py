"""import-pipeline: make a local diffusers PixArt pipeline folder a checkpoint the workbench
opens, without copying its weights (engine.model.pipeline)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.ops.base import Operation, param
from engine.ops.params import Reporter


@dataclass
class ImportPipeline(Operation):
    kind = "import-pipeline"
    heavy = False  # hashes the weights' files; loads no model
    help = (
        "reference a local PixArt pipeline folder as a checkpoint (dit-workbench import-pipeline)"
    )

    directory: str = param(path=True, argument="DIRECTORY",
                           help="A local diffusers PixArt-alpha / PixArt-Sigma pipeline folder.")  # fmt: skip
    out: str = param(path=True, help="New checkpoint folder (holds workbench.json).")

    def run(self, report: Reporter) -> dict:
        """The new checkpoint's path and its workbench.json."""
        from engine.model.pipeline import import_pipeline

        def progress(part: str, name: str) -> None:
            report.log(f"hashing {part}/{name}")

        path = import_pipeline(Path(self.directory), Path(self.out), progress=progress)
        return {"path": str(path), "meta": json.loads((path / "workbench.json").read_text())}
