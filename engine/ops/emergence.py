"""emergence: screen every kept checkpoint of a training run, beside its learning curves.

The computation and what is stored are engine.probe.emergence; the run's own cache file is
engine.store.emergence.run_store. The result holds what `dit-workbench emergence` prints: the
step x head rows (every head), the first-pass rows of the top heads and evaluator metrics, and,
with a synopsis per checkpoint, its spatial accuracy and top head per step.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.core import limits, roots
from engine.core.device import DEVICE_HELP, check_device
from engine.core.errors import UserError
from engine.ops.ablate import CACHE_HELP
from engine.ops.base import Operation, param
from engine.ops.params import Reporter, check_cache_dir
from engine.probe.emergence import HEAD_THRESHOLD, METRIC_THRESHOLD, SYNOPSIS_STEPS


@dataclass
class Emergence(Operation):
    kind = "emergence"
    heavy = False
    help = "screen every kept checkpoint of a training run (dit-workbench emergence)"

    # the job parameter is `run` (docs/engine-api.md); `run` is also the method's name
    run_dir: str = param(path=True, argument="RUN", aliases=("run",),
                         help="A training run folder (best trained with --keep-history).")  # fmt: skip
    synopsis: int = param(0, bound=limits.NON_NEGATIVE,
                          help="Also a small attention synopsis per checkpoint: N evaluation "
                          "prompts, one seed (samples; slow on CPU). Stored in each checkpoint's "
                          "cache.")  # fmt: skip
    synopsis_steps: int = param(SYNOPSIS_STEPS, bound=limits.SAMPLER_STEPS,
                                help="Denoising steps of that synopsis (paper: 14).")  # fmt: skip
    threshold: float = param(HEAD_THRESHOLD,
                             help="A head passes once its mean cosine over relations reaches "
                             "this.")  # fmt: skip
    metric_threshold: float = param(METRIC_THRESHOLD,
                                    help="An evaluator metric passes once it reaches this.")  # fmt: skip
    top: int = param(5, bound=limits.POSITIVE,
                     help="Heads shown (by score at the last step); CSV and JSON carry all "
                     "heads.")  # fmt: skip
    recompute: bool = param(False, help="Screen every checkpoint again even if stored.")
    cache: str | None = param(None, path=True, help=CACHE_HELP)
    device: str = param("auto", help="Where the --synopsis samples: " + DEVICE_HELP)

    @classmethod
    def normalise(cls, params: dict, cwd: str | None) -> dict:
        # `run` is read as `run_dir` (its alias) unless both are given
        if isinstance(params, dict) and "run" in params and "run_dir" in params:
            raise UserError("give the training run once: param 'run' (or 'run_dir')")
        return params

    def check(self, cwd: str | None) -> None:
        from engine.probe.emergence import kept_checkpoints

        self.device = check_device(self.device)
        kept_checkpoints(self.run_dir)  # a run without checkpoints fails before queueing
        check_cache_dir(self.cache, self.spelled)
        self.cache = self.cache or str(roots.cache_dir())

    def run(self, report: Reporter) -> dict:
        from engine.probe import emergence as E
        from engine.store.cache import Store
        from engine.store.emergence import run_store

        report.progress(0.0, "screen")

        def on(k: int, n: int, step: int) -> None:
            report.progress(k / n, f"step {step}")

        e = E.compute_emergence(
            self.run_dir,
            run_store(E.run_folder(self.run_dir), self.cache),
            self.synopsis,
            self.synopsis_steps,
            self.recompute,
            progress=on,
            device=self.device,
            checkpoint_store=lambda ckpt: Store.for_checkpoint(ckpt, self.cache),
        )
        la, h = e.top_heads(1)[0]
        report.log(
            f"screened {len(e.steps)} checkpoints (steps {e.steps[0]}-{e.steps[-1]}); top head "
            f"at the last step {E.head_name(la, h)}; stored as {e.name} in {e.cache}"
        )
        curves = E.run_curves(self.run_dir)
        out = {
            "run": e.name,  # the stored emergence run (the training run is run_dir)
            "cache": e.cache,
            "steps": e.steps,
            "top_heads": [E.head_name(*lh) for lh in e.top_heads(self.top)],
            "step_rows": E.step_rows(e, curves=curves),
            "passes": E.pass_rows(e, curves, self.threshold, self.metric_threshold, self.top),
        }
        if e.synopsis is not None:
            out["synopsis_spatial"] = [float(v) for v in e.synopsis_spatial]
            out["synopsis_top"] = [_argmax_head(e.synopsis[i]) for i in range(len(e.steps))]
        report.progress(1.0, "done")
        return out

    def summary(self, result: dict) -> dict:
        return {k: result[k] for k in ("run", "cache", "steps")}


def _argmax_head(a) -> str:
    """The name of the highest-scoring head of an [L, H] array (NaN never wins)."""
    import numpy

    from engine.probe.emergence import head_name

    a = numpy.nan_to_num(numpy.asarray(a, dtype=float), nan=-numpy.inf)
    la, h = numpy.unravel_index(int(numpy.argmax(a)), a.shape)
    return head_name(int(la), int(h))
