"""variance: the share of the text embedding's variance that each caption factor explains,
before and after the DiT's caption projection (engine.intervene.variance), stored in the cache.

Light (the text encoder and one projection, no sampling): the engine runs it beside a heavy
job. The command line (`dit-workbench variance`) and the engine's `variance` job run this class.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.device import DEVICE_HELP
from engine.data.prompts import prompt_set
from engine.ops.ablate import CACHE_HELP, CKPT_HELP, PROMPTS_HELP, check_model_inputs, open_store
from engine.ops.base import Operation, param
from engine.ops.params import Reporter, named_checkpoint


@dataclass
class Variance(Operation):
    kind = "variance"
    heavy = False
    help = "text-encoder variance decomposition (dit-workbench variance)"

    checkpoint: str = param(path=True, argument="CKPT", aliases=("ckpt",), help=CKPT_HELP)
    prompts: str = param("eval", help=PROMPTS_HELP)
    cache: str | None = param(None, path=True, help=CACHE_HELP)
    no_cache: bool = param(False, help="Do not store the result.")
    device: str = param("auto", help=DEVICE_HELP)

    @classmethod
    def normalise(cls, params: dict, cwd: str | None) -> dict:
        return named_checkpoint(params, cwd)

    def check(self, cwd: str | None) -> None:
        check_model_inputs(self, cwd)

    def run(self, report: Reporter) -> dict:
        """`run_variance`'s result: checkpoint, encoder, prompts, n, run, factors, rows."""
        from engine.intervene.variance import run_variance
        from engine.model.checkpoint import load_checkpoint

        prompts, label = prompt_set(self.prompts)
        report.progress(0.0, "load")
        ckpt = load_checkpoint(self.checkpoint, device=self.device)
        report.progress(0.5, "decompose")
        res = run_variance(ckpt, prompts, open_store(self, ckpt), label)
        report.progress(1.0, "done")
        return res

    def summary(self, result: dict) -> dict:
        return {"run": result.get("run")}
