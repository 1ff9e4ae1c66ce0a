"""sample: a checkpoint's images for a set of prompts, written as an image folder (PNGs and
metadata.jsonl) that `evaluate` reads. The command line (`dit-workbench sample`) and the
engine's `sample` job run this class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.core import limits
from engine.core.device import check_device
from engine.core.sampling import DEFAULT_SAMPLING, SamplingSettings
from engine.ops.base import Operation, param
from engine.ops.params import Reporter, check_caption_lengths, named_checkpoint

# Other clients' names for two params (the command line's argument and option).
ALIASES = {"ckpt": "checkpoint", "prompt": "prompts"}


@dataclass
class Sample(Operation):
    kind = "sample"
    help = "sample a checkpoint into an image folder"

    checkpoint: str = param(path=True, help="checkpoint or training run folder (or its name)")
    out: str = param(path=True, help="new folder for the images")
    prompts: list[str] | None = param(None, help="captions")
    prompts_file: str | None = param(None, path=True, help="text file, one caption a line")
    eval_set: bool = param(False, help="the fixed 264-prompt evaluation set")
    n: int = param(1, bound=limits.IMAGES_PER_PROMPT, help="images per prompt")
    seed: int = param(DEFAULT_SAMPLING.seed, bound=limits.SEED, help="first seed")
    steps: int = param(
        DEFAULT_SAMPLING.steps, bound=limits.SAMPLER_STEPS, help="DPM-Solver++ steps"
    )
    cfg: float = param(
        DEFAULT_SAMPLING.cfg, bound=limits.CFG, help="classifier-free guidance scale"
    )
    batch_size: int = param(
        DEFAULT_SAMPLING.batch_size, bound=limits.BATCH, help="images per forward pass"
    )
    overwrite: bool = param(False, help="replace a non-empty image folder")
    device: str = param("auto", help="auto, cpu, cuda or cuda:N")

    @classmethod
    def normalise(cls, params: dict, cwd: str | None) -> dict:
        if isinstance(params, dict):
            params = dict(params)
            for alias, name in ALIASES.items():
                if alias in params and name not in params:
                    params[name] = params.pop(alias)
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
        SamplingSettings.of(self).check({"n": self.n}, len(prompts))
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
