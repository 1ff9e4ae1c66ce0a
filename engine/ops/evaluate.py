"""evaluate: score an image folder against the prompts it was made from (CPU)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.limits import Bound
from engine.ops.base import Operation, param
from engine.ops.params import Reporter


@dataclass
class Evaluate(Operation):
    kind = "evaluate"
    heavy = False
    help = "score an image folder against its prompts (CPU)"

    folder: str = param(path=True, argument="FOLDER",
                        help="Image folder (Hugging Face imagefolder): image files plus "
                        "metadata.jsonl with one JSON object per line holding at least file_name "
                        "and text (the prompt).")  # fmt: skip
    workers: int = param(0, bound=Bound(0, 256, integer=True),
                         help="Threads for decoding and detection (0: one per CPU core).")  # fmt: skip

    def check(self, cwd: str | None) -> None:
        from engine.eval.evaluate import read_records

        read_records(self.folder)  # a missing folder or bad metadata fails before queueing

    def run(self, report: Reporter) -> dict:
        from engine.eval.evaluate import evaluate_folder

        report.progress(0.0, "evaluate")
        res = evaluate_folder(self.folder, workers=self.workers or None)
        report.progress(1.0, "done")
        return {"folder": self.folder, **res.to_dict()}

    def summary(self, result: dict) -> dict:
        return {k: v for k, v in result.items() if k != "per_image"}
