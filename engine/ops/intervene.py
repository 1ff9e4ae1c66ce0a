"""Engine job kinds and tables for ablations, head sweeps and the variance decomposition.

Parameters mirror `dit-workbench ablate` / `variance`. Validation runs in the engine and stays
cheap (no torch); the run functions load the model in the job's worker process.
"""

from __future__ import annotations

from engine.core import columns, limits, roots
from engine.core.device import check_device
from engine.core.errors import UserError
from engine.data.prompts import prompt_set, resolve_prompt_spec
from engine.ops.params import (
    Param,
    Reporter,
    check_cache_dir,
    check_caption_lengths,
    check_params,
    model_size,
    named_checkpoint,
)

ABLATE = {
    "checkpoint": Param(str, path=True),
    "interventions": Param(list, None),
    "sweep": Param(str, None),
    "prompts": Param(str, "eval"),
    "n": Param(int, 25, bound=limits.IMAGES_PER_PROMPT),
    "seed": Param(int, 0, bound=limits.SEED),
    "steps": Param(int, 14, bound=limits.SAMPLER_STEPS),
    "cfg": Param(float, 4.5, bound=limits.CFG),
    "batch_size": Param(int, 32, bound=limits.BATCH),
    "resamples": Param(int, 2000, bound=limits.RESAMPLES),
    "cache": Param(str, None, path=True),
    "device": Param(str, "auto"),
}
VARIANCE = {
    "checkpoint": Param(str, path=True),
    "prompts": Param(str, "eval"),
    "cache": Param(str, None, path=True),
    "device": Param(str, "auto"),
}


def _check_common(p: dict, cwd: str | None) -> dict:

    from engine.model.checkpoint import resolve_checkpoint_dir

    resolve_checkpoint_dir(p["checkpoint"])
    if p["prompts"] != "eval":
        p["prompts"] = resolve_prompt_spec(p["prompts"], cwd)
        check_caption_lengths(q.text for q in prompt_set(p["prompts"])[0])
    check_cache_dir(p["cache"])
    p["cache"] = p["cache"] or str(roots.cache_dir())
    p["device"] = check_device(p["device"])
    return p


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


def validate_ablate(params: dict, cwd: str | None) -> dict:
    params = named_checkpoint(from_head_form(params), cwd)
    p = _check_common(check_params("ablate", params, ABLATE, cwd), cwd)
    if not p["interventions"] and not p["sweep"]:
        raise UserError("ablate needs interventions=[SPEC, ...] or sweep=TEMPLATE")
    if p["interventions"] and p["sweep"]:
        raise UserError("give either interventions or sweep, not both")
    for name in ("n", "steps", "batch_size", "resamples"):
        if p[name] <= 0:
            raise UserError(f"param {name!r} must be positive (got {p[name]})")
    # Refuse a malformed spec or a head the model lacks now, not in the queued job.
    from engine.intervene.spec import precheck
    from engine.model.checkpoint import resolve_checkpoint_dir

    layers, heads = model_size(resolve_checkpoint_dir(p["checkpoint"]))
    for spec in p["interventions"] or []:
        precheck(spec, layers, heads, p["steps"])
    if p["sweep"]:
        precheck(p["sweep"], layers, heads, p["steps"], sweep=True)
    return p


def run_ablate(params: dict, report: Reporter) -> dict:
    from engine.intervene.ablate import run_ablation, run_sweep
    from engine.model.checkpoint import load_checkpoint
    from engine.store.cache import Store

    p = params
    prompts, label = prompt_set(p["prompts"])
    report.progress(0.0, "load")
    ckpt = load_checkpoint(p["checkpoint"], device=p["device"])
    store = Store.for_checkpoint(ckpt, p["cache"])

    def progress(done: int, total: int):
        report.progress(done / max(total, 1), "sample")

    common = dict(n=p["n"], seed=p["seed"], steps=p["steps"], cfg=p["cfg"], store=store,
                  progress=progress, batch_size=p["batch_size"], resamples=p["resamples"],
                  prompts_label=label)  # fmt: skip
    if p["sweep"]:
        res = run_sweep(ckpt, p["sweep"], prompts, **common)
        report.log(f"sweep {p['sweep']!r}: {len(res.get('cells', []))} cells in run {res['run']}")
        return {"run": res["run"], "sweep": p["sweep"], "sample_sets": res.get("sample_sets")}
    res = run_ablation(ckpt, p["interventions"], prompts, **common)
    runs = [e["run"] for e in res["interventions"]]
    for e in res["interventions"]:
        sp = e["metrics"].get("spatial", {})
        report.log(f"{e['intervention']}: spatial delta {sp.get('delta', float('nan')):+.3f}")
    return {"runs": runs, "baseline_run": res["baseline_run"]}


def validate_variance(params: dict, cwd: str | None) -> dict:
    params = named_checkpoint(params, cwd)
    return _check_common(check_params("variance", params, VARIANCE, cwd), cwd)


def run_variance_job(params: dict, report: Reporter) -> dict:
    from engine.intervene.variance import run_variance
    from engine.model.checkpoint import load_checkpoint
    from engine.store.cache import Store

    prompts, label = prompt_set(params["prompts"])
    report.progress(0.0, "load")
    ckpt = load_checkpoint(params["checkpoint"], device=params["device"])
    res = run_variance(ckpt, prompts, Store.for_checkpoint(ckpt, params["cache"]), label)
    report.progress(1.0, "done")
    return {"run": res.get("run")}


# --- tables -----------------------------------------------------------------------------------


def _store(params: dict):
    from engine.store.cache import store_for_path

    if "checkpoint" not in params:
        raise UserError("this table needs checkpoint=CKPT")
    return store_for_path(roots.resolve(params["checkpoint"], "checkpoint"), roots.cache_dir())


def _metric(params: dict) -> str | None:
    """The table's metric=NAME, checked (an unknown name would silently give no rows)."""
    from engine.eval.evaluate import METRICS

    metric = params.get("metric") or None
    if metric is not None and metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    return metric


def ablations_table(params: dict) -> tuple[list[str], list[list]]:
    from engine.intervene.results import ABLATION_COLUMNS, ablation_rows

    rows = ablation_rows(_store(params), _metric(params))
    return list(ABLATION_COLUMNS), [[r.get(c) for c in ABLATION_COLUMNS] for r in rows]


def sweeps_table(params: dict) -> tuple[list[str], list[list]]:
    """The stored per-head sweeps of a checkpoint, oldest first (the TUI picks one to show)."""
    from engine.intervene.results import sweep_runs

    cols = list(columns.SWEEPS)
    return cols, [[r.get(c) for c in cols] for r in sweep_runs(_store(params))]


def sweep_table(params: dict) -> tuple[list[str], list[list]]:
    from engine.intervene.results import SWEEP_COLUMNS, sweep_rows

    run = params.get("run") or params.get("spec") or None  # the TUI names the run "spec"
    rows = sweep_rows(_store(params), run, _metric(params))
    return list(SWEEP_COLUMNS), [[r.get(c) for c in SWEEP_COLUMNS] for r in rows]
