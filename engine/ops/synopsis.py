"""synopsis: sample with attention capture, evaluate the images, store the synopsis.

The work is engine.probe.synopsis.run_synopsis; a stored incomplete run with the same params
is continued, so resubmitting (or running the same command again) resumes an interrupted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from engine.core import limits, roots
from engine.core.device import DEVICE_HELP, check_device
from engine.core.sampling import SamplingSettings, sampling_param
from engine.ops.ablate import CACHE_HELP
from engine.ops.base import Operation, param
from engine.ops.params import (
    Reporter,
    check_cache_dir,
    check_caption_lengths,
    named_checkpoint,
)


@dataclass
class Synopsis(Operation):
    kind = "synopsis"
    resumable = True  # always: a synopsis continues its stored partial run
    help = "sample with attention capture, evaluate, store the synopsis (dit-workbench synopsis)"

    checkpoint: str = param(path=True, argument="CKPT", aliases=("ckpt",),
                            help="Checkpoint folder or training run (uses `latest`).")  # fmt: skip
    prompts: str = param("eval",
                         help="eval (the 264-prompt evaluation set) or a file, one per line.")  # fmt: skip
    n_per_prompt: int = param(8, bound=limits.IMAGES_PER_PROMPT, help="Seeds per prompt.")
    seed: int = sampling_param("seed")
    steps: int = sampling_param("steps")
    cfg: float = sampling_param("cfg")
    batch_size: int = sampling_param("batch_size")
    detail: int = param(8, bound=limits.NON_NEGATIVE,
                        help="Samples whose full per-token maps are kept (head-detail pane).")  # fmt: skip
    self_attn: bool = param(False,
                            help="Also summarise self-attention (a second sampling pass).")  # fmt: skip
    cache: str | None = param(None, path=True, help=CACHE_HELP)
    resume: bool = param(
        False, cli=False, help="Accepted for symmetry: a synopsis always continues."
    )
    device: str = param("auto", help=DEVICE_HELP)

    @classmethod
    def normalise(cls, params: dict, cwd: str | None) -> dict:
        return named_checkpoint(params, cwd)

    def check(self, cwd: str | None) -> None:
        from engine.data.prompts import prompt_set, resolve_prompt_spec
        from engine.model.checkpoint import resolve_checkpoint_dir

        resolve_checkpoint_dir(self.checkpoint)
        self.prompts = resolve_prompt_spec(self.prompts, cwd)
        plist = prompt_set(self.prompts)[0]
        if self.prompts != "eval":
            check_caption_lengths(q.text for q in plist)
        SamplingSettings.of(self).check(
            {"n_per_prompt": self.n_per_prompt}, len(plist), self.spelled
        )
        check_cache_dir(self.cache, self.spelled)
        self.cache = self.cache or str(roots.cache_dir())
        self.device = check_device(self.device)

    def run(self, report: Reporter) -> dict:
        from engine.data.prompts import prompt_set
        from engine.model.checkpoint import load_checkpoint
        from engine.probe.ranking import run_summary
        from engine.probe.synopsis import KIND, run_synopsis
        from engine.store.cache import Store

        prompts, label = prompt_set(self.prompts)
        report.progress(0.0, "load")
        ckpt = load_checkpoint(self.checkpoint, device=self.device)
        store = Store.for_checkpoint(ckpt, self.cache)
        t0 = time.monotonic()

        def progress(done: int, total: int):
            el = time.monotonic() - t0
            eta = el / done * (total - done) if done else None
            report.progress(done / max(total, 1), "sample", eta)

        run = run_synopsis(ckpt, prompts, self.n_per_prompt, SamplingSettings.of(self), store,
                           progress, self.detail, self.self_attn, label)  # fmt: skip
        report.log(f"synopsis run {run} stored in {store.path}")
        # free-text prompts: image categories fall back (engine.probe.synopsis says how)
        note = store.attrs(KIND, run).get("image_categories_note")
        return {"run": run, "cache": str(store.path), **run_summary(store, run), "note": note}

    def summary(self, result: dict) -> dict:
        return {k: result[k] for k in ("run", "cache", "n_samples", "complete")}
