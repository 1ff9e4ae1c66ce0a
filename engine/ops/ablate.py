"""ablate: interventions, or one intervention per head (a sweep), against the unmodified model
on paired seeds, each scored with a paired-bootstrap interval and stored in the cache.

`Ablate(interventions=[SPEC, ...])` compares each spec with the (cached) baseline;
`Ablate(sweep="mask-head *.* tokens=relation")` runs the spec once per head. The command line
(`dit-workbench ablate`) and the engine's `ablate` job run this one class; the TUI's one-head
form ({layer, head, intervention, tokens, steps, samples}) is read by `from_head_form`.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.core import limits, roots
from engine.core.device import DEVICE_HELP, check_device
from engine.core.errors import UserError
from engine.core.sampling import SamplingSettings, sampling_param
from engine.data.prompts import prompt_set, resolve_prompt_spec
from engine.ops.base import Operation, param
from engine.ops.params import (
    Reporter,
    check_cache_dir,
    check_caption_lengths,
    model_size,
    named_checkpoint,
)

CKPT_HELP = "Checkpoint folder (or a training run folder: uses `latest`)."
PROMPTS_HELP = "eval (the 264-prompt set) or a text file, one caption a line."
CACHE_HELP = (
    "Cache folder (default: the engine's; the command line's: ./cache or $DIT_WORKBENCH_CACHE)."
)
SPEC_HELP = (
    "An intervention, e.g. 'mask-head 2.8 tokens=relation steps=0-13'. Forms: "
    "mask-head L.H [tokens=CATS] [steps=S] [branch=cond|uncond|both]; "
    "zero-head L.H [attn=cross|self] [steps=S] [branch=..]; drop-words CATS; "
    "swap-words A=B; insert-filler WORD [where=before-relation] [count=1]; "
    "embed-add '+above -below' [scale=1] [tokens=CATS]; "
    "patch L.H from='PROMPT' [what=out|probs] [attn=..] [steps=..]. "
    "Join parts with ' + ' to apply them together; repeat --intervention for separate "
    "conditions, each compared with the same baseline."
)
SWEEP_HELP = (
    "One intervention per head: a spec whose head is written with '*', e.g. "
    "'mask-head *.* tokens=relation' (N heads cost N+1 sample sets). Stored as the "
    "ablation-delta table the TUI shows."
)


def from_head_form(params: dict) -> dict:
    """The TUI's one-head form {layer, head, intervention: mask|zero, tokens, steps, samples}
    as the text spec every other client sends ({interventions: [SPEC], n})."""
    if not isinstance(params, dict) or "layer" not in params:
        return params
    p = dict(params)
    layer, head, kind = p.pop("layer"), p.pop("head", None), p.pop("intervention", "mask")
    tokens, steps = p.pop("tokens", None), p.pop("steps", "all")
    if not isinstance(layer, int) or not isinstance(head, int):
        raise UserError("ablate needs integer layer and head")
    if kind not in ("mask", "zero"):
        raise UserError(f"intervention must be mask or zero (got {kind!r})")
    spec = f"{kind}-head {layer}.{head}"
    if kind == "mask":
        spec += f" tokens={','.join(tokens or ['relation'])}"
    if steps not in (None, "", "all"):
        spec += f" steps={steps}"
    p["interventions"] = [spec]
    if "samples" in p:
        p["n"] = p.pop("samples")
    return p


def check_model_inputs(op, cwd: str | None) -> None:
    """What ablate and variance share: an existing checkpoint, readable prompts that the text
    encoder can take, a cache folder (the engine's by default) and a known device."""
    from engine.model.checkpoint import resolve_checkpoint_dir

    resolve_checkpoint_dir(op.checkpoint)
    if op.prompts != "eval":
        op.prompts = resolve_prompt_spec(op.prompts, cwd)
        check_caption_lengths(q.text for q in prompt_set(op.prompts)[0])
    check_cache_dir(op.cache, op.spelled)
    op.cache = op.cache or str(roots.cache_dir())
    op.device = check_device(op.device)


def open_store(op, ckpt):
    """The checkpoint's store in the op's cache folder, or None with no_cache."""
    from engine.store.cache import Store

    return None if op.no_cache else Store.for_checkpoint(ckpt, op.cache)


@dataclass
class Ablate(Operation):
    kind = "ablate"
    help = "interventions or a head sweep against the cached baseline (dit-workbench ablate)"

    checkpoint: str = param(path=True, argument="CKPT", aliases=("ckpt",), help=CKPT_HELP)
    interventions: list[str] | None = param(None, flags=("--intervention", "-i"), help=SPEC_HELP)
    sweep: str | None = param(None, help=SWEEP_HELP)
    prompts: str = param("eval", help=PROMPTS_HELP)
    n: int = param(25, bound=limits.IMAGES_PER_PROMPT,
                   help="(prompt, seed) samples: the prompt set shuffled with --seed, taken in "
                   "order; past the end it wraps round with the next seed.")  # fmt: skip
    seed: int = sampling_param("seed", help="Seed of the shuffle and first image seed.")
    steps: int = sampling_param("steps")
    cfg: float = sampling_param("cfg")
    batch_size: int = sampling_param("batch_size")
    resamples: int = param(2000, bound=limits.RESAMPLES,
                           help="Paired-bootstrap resamples for the 95% intervals.")  # fmt: skip
    device: str = param("auto", help=DEVICE_HELP)
    cache: str | None = param(None, path=True, help=CACHE_HELP)
    no_cache: bool = param(
        False, help="Neither reuse nor store anything (baseline sampled afresh)."
    )

    @classmethod
    def normalise(cls, params: dict, cwd: str | None) -> dict:
        return named_checkpoint(from_head_form(params), cwd)

    def check(self, cwd: str | None) -> None:
        if not self.interventions and not self.sweep:
            raise UserError(
                f"give {self.spelled('interventions')} (specs such as 'mask-head 0.0 "
                f"tokens=relation') or {self.spelled('sweep')} (one spec with its head written '*')"
            )
        if self.interventions and self.sweep:
            i, s = self.spelled("interventions"), self.spelled("sweep")
            raise UserError(f"give {i} or {s}, not both")
        check_model_inputs(self, cwd)
        SamplingSettings.of(self).check({"n": self.n})
        # A malformed spec or a head the model lacks is refused now, not in the queued job.
        from engine.intervene.spec import precheck
        from engine.model.checkpoint import resolve_checkpoint_dir

        layers, heads = model_size(resolve_checkpoint_dir(self.checkpoint))
        for spec in self.interventions or []:
            precheck(spec, layers, heads, self.steps)
        if self.sweep:
            precheck(self.sweep, layers, heads, self.steps, sweep=True)

    def run(self, report: Reporter) -> dict:
        """`run_sweep`'s or `run_ablation`'s whole result (engine.intervene.ablate)."""
        from engine.intervene.ablate import run_ablation, run_sweep
        from engine.model.checkpoint import load_checkpoint

        prompts, label = prompt_set(self.prompts)
        report.progress(0.0, "load")
        ckpt = load_checkpoint(self.checkpoint, device=self.device)

        def progress(done: int, total: int):
            report.progress(done / max(total, 1), "sample")

        common = dict(n=self.n, sampling=SamplingSettings.of(self), store=open_store(self, ckpt),
                      progress=progress, resamples=self.resamples, prompts_label=label)  # fmt: skip
        if self.sweep:
            res = run_sweep(ckpt, self.sweep, prompts, **common)
            report.log(f"sweep {self.sweep!r}: {len(res['cells'])} cells in run {res['run']}")
        else:
            res = run_ablation(ckpt, self.interventions, prompts, **common)
            for e in res["interventions"]:
                sp = e["metrics"].get("spatial", {})
                report.log(
                    f"{e['intervention']}: spatial delta {sp.get('delta', float('nan')):+.3f}"
                )
        report.progress(1.0, "done")
        return res

    def summary(self, result: dict) -> dict:
        """Where the results are stored (the tables read them from there)."""
        if self.sweep:
            return {k: result.get(k) for k in ("run", "sweep", "sample_sets")}
        runs = [e["run"] for e in result["interventions"]]
        return {"runs": runs, "baseline_run": result["baseline_run"]}
