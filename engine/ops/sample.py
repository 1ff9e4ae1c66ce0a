"""sample: a checkpoint's images for a set of prompts, written as an image folder (PNGs and
metadata.jsonl) that `evaluate` reads. The command line (`dit-workbench sample`) and the
engine's `sample` job run this class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.core import limits
from engine.core.device import DEVICE_HELP, check_device
from engine.core.sampling import SamplingSettings, sampling_param
from engine.ops.base import Operation, param
from engine.ops.params import Reporter, check_caption_lengths, named_checkpoint

CKPT_HELP = "Checkpoint folder (or a training run folder: uses `latest`)."


@dataclass
class Sample(Operation):
    kind = "sample"
    help = "sample a checkpoint into an image folder"

    checkpoint: str = param(path=True, argument="CKPT", aliases=("ckpt",), help=CKPT_HELP)
    out: str = param(path=True, help="New folder for the images (imagefolder with metadata.jsonl).")
    prompts: list[str] | None = param(None, flags=("--prompt",), aliases=("prompt",),
                                      help="A caption; repeat for several.")  # fmt: skip
    prompts_file: str | None = param(None, path=True, help="Text file, one caption per line.")
    eval_set: bool = param(False, help="The fixed 264-prompt evaluation set.")
    n: int = param(1, bound=limits.IMAGES_PER_PROMPT,
                   help="Images per prompt (seeds SEED .. SEED+N-1).")  # fmt: skip
    seed: int = sampling_param(
        "seed", help="First seed; each image's noise comes from (prompt, seed)."
    )
    steps: int = sampling_param("steps")
    cfg: float = sampling_param("cfg")
    batch_size: int = sampling_param("batch_size")
    overwrite: bool = param(False, help="Replace a non-empty output folder.")
    device: str = param("auto", help=DEVICE_HELP)

    @classmethod
    def normalise(cls, params: dict, cwd: str | None) -> dict:
        return named_checkpoint(params, cwd)

    def _prompts(self):
        from engine.model.sample_files import collect_prompts

        pf = Path(self.prompts_file) if self.prompts_file else None
        return collect_prompts(self.prompts, pf, self.eval_set)

    def check(self, cwd: str | None) -> None:
        from engine.data.files import check_output_folder
        from engine.model.checkpoint import resolve_checkpoint_dir

        self.device = check_device(self.device)
        resolve_checkpoint_dir(self.checkpoint)
        prompts = self._prompts()  # unreadable prompts fail now, not in the queued job
        check_caption_lengths(q.text for q in prompts)
        SamplingSettings.of(self).check({"n": self.n}, len(prompts), self.spelled)
        check_output_folder(self.out, self.overwrite)

    def run(self, report: Reporter) -> dict:
        from engine.model.sample_files import write_samples

        prompts = self._prompts()
        total, done = len(prompts) * self.n, 0
        report.progress(0.0, "load")

        def step(k: int):
            nonlocal done
            done += k
            report.progress(0.95 * done / total, "sample")

        out = write_samples(self.checkpoint, self.out, prompts, self.n, SamplingSettings.of(self),
                            self.overwrite, progress=step, device=self.device)  # fmt: skip
        report.progress(1.0, "done")
        return {"out": str(out), "images": total}
