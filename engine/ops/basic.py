"""The built-in job kinds: selftest, train, sample, evaluate.

Each has a `validate_*` (runs in the engine before queueing; cheap, no torch) and a `run_*`
(runs in the worker; imports what it needs). Parameters mirror the CLI's options.
"""

from __future__ import annotations

import time
from dataclasses import MISSING, fields
from pathlib import Path

from engine.core import limits
from engine.core.device import check_device
from engine.core.errors import UserError
from engine.core.limits import Bound
from engine.ops.params import REQUIRED, Param, Reporter, check_caption_lengths, check_params

# --- selftest: exercises the engine without a GPU or a model --------------------------------

SELFTEST = {
    "seconds": Param(float, 1.0, bound=Bound(0, 86400)),
    "steps": Param(int, 10, bound=limits.POSITIVE),
    "fail": Param(bool, False),
    "resume": Param(bool, False),
}


def validate_selftest(params: dict, cwd: str | None) -> dict:
    p = check_params("selftest", params, SELFTEST, cwd)
    if not 0 <= p["seconds"] <= 86400 or p["steps"] <= 0:
        raise UserError("selftest needs 0 <= seconds <= 86400 and steps > 0")
    return p


def run_selftest(params: dict, report: Reporter) -> dict:
    n, dt = params["steps"], params["seconds"] / params["steps"]
    report.log(f"selftest: {n} steps of {dt:.3f} s" + (" (resumed)" if params["resume"] else ""))
    for k in range(n):
        time.sleep(dt)
        report.progress((k + 1) / n, "sleep")
        if params["fail"] and k == n // 2:
            raise UserError("selftest failed on purpose (fail=true)")
    return {"steps": n, "seconds": params["seconds"], "resumed": params["resume"]}


# --- train ----------------------------------------------------------------------------------

_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "str | None": str}
_TRAIN_PATHS = ("out", "init_from")


def _train_spec() -> dict[str, Param]:
    from engine.train.config import TrainConfig

    spec = {}
    for f in fields(TrainConfig):
        default = REQUIRED if f.default is MISSING else f.default
        spec[f.name] = Param(_TYPES[str(f.type)], default, path=f.name in _TRAIN_PATHS)
    # As on the command line: bf16 on a GPU, full precision on CPU.
    spec["mixed_precision"] = Param(str, "auto", choices=("auto", "no", "fp16", "bf16"))
    spec["resume"] = Param(bool, False)
    return spec


def _only_config(out: Path) -> bool:
    """A run folder holding nothing but train_config.json: stopped before its first checkpoint."""
    return out.is_dir() and [p.name for p in out.iterdir()] == ["train_config.json"]


def validate_train(params: dict, cwd: str | None) -> dict:
    from engine.train.config import TrainConfig

    p = check_params("train", params, _train_spec(), cwd)
    cfg = TrainConfig(**{k: v for k, v in p.items() if k != "resume"})
    if cfg.mixed_precision == "auto":
        cfg.mixed_precision = "no"  # resolved in the worker, where the device is known
    cfg.validate()
    p["device"] = cfg.device  # normalised spelling; whether it exists is checked in the worker
    out = Path(p["out"])
    if not out.parent.is_dir():
        raise UserError(f"parent folder {str(out.parent)!r} of the run folder does not exist")
    if p["resume"]:
        if not (out / "train_config.json").is_file():
            raise UserError(f"nothing to resume in {str(out)!r} (no train_config.json)")
    elif out.exists() and any(out.iterdir()):
        raise UserError(
            f"run folder {str(out)!r} is not empty; pass resume=true to continue it or choose a new out"
        )
    if p["init_from"]:
        from engine.model.checkpoint import resolve_checkpoint_dir

        resolve_checkpoint_dir(p["init_from"])
    return p


def run_train(params: dict, report: Reporter) -> dict:
    from engine.core.device import resolve_device
    from engine.train.loop import TrainConfig, train

    p = dict(params)
    resume = p.pop("resume")
    if p["mixed_precision"] == "auto":
        p["mixed_precision"] = "bf16" if resolve_device(p["device"]).type == "cuda" else "no"
    cfg = TrainConfig(**p)
    out = Path(cfg.out)
    if resume and not (out / "latest").exists() and _only_config(out):
        # Interrupted before its first checkpoint: there is nothing to continue, start over.
        report.log("no checkpoint written yet; starting the run from step 0")
        (out / "train_config.json").unlink()
        resume = False
    report.progress(0.0, "prepare")
    last: dict = {}

    def on(rec: dict):
        if rec.get("event") == "checkpoint":
            last.clear()
            last.update({k: v for k, v in rec.items() if k != "event"})
            keys = ("color", "shape", "exist_binding", "spatial", "overall")
            report.log(
                f"checkpoint step {rec['step']}: "
                + " ".join(f"{k}={rec[k]:.3f}" for k in keys if k in rec)
            )
            return
        report.log(f"step {rec['step']} loss {rec['loss']:.4f} {rec['img_per_s']:.0f} img/s")
        report.progress(rec["step"] / cfg.steps, "train")

    run = train(cfg, resume=resume, progress=on)
    report.progress(1.0, "done")
    return {"out": str(run), "latest": str((run / "latest").resolve()), "metrics": last}


# --- sample ---------------------------------------------------------------------------------

SAMPLE = {
    "checkpoint": Param(str, path=True),
    "out": Param(str, path=True),
    "prompts": Param(list, None),
    "prompts_file": Param(str, None, path=True),
    "eval_set": Param(bool, False),
    "n": Param(int, 1, bound=limits.IMAGES_PER_PROMPT),
    "seed": Param(int, 0, bound=limits.SEED),
    "steps": Param(int, 14, bound=limits.SAMPLER_STEPS),
    "cfg": Param(float, 4.5, bound=limits.CFG),
    "batch_size": Param(int, 32, bound=limits.BATCH),
    "overwrite": Param(bool, False),
    "device": Param(str, "auto"),
}


def validate_sample(params: dict, cwd: str | None) -> dict:
    from engine.data.files import check_output_folder
    from engine.model.checkpoint import resolve_checkpoint_dir
    from engine.model.sample_files import collect_prompts

    params = dict(params)
    for cli_name, name in (("prompt", "prompts"), ("ckpt", "checkpoint")):  # the CLI's names
        if cli_name in params and name not in params:
            params[name] = params.pop(cli_name)
    p = check_params("sample", params, SAMPLE, cwd)
    p["device"] = check_device(p["device"])
    for name in ("n", "steps", "batch_size"):
        if p[name] <= 0:
            raise UserError(f"param {name!r} must be positive (got {p[name]})")
    resolve_checkpoint_dir(p["checkpoint"])
    pf = Path(p["prompts_file"]) if p["prompts_file"] else None
    prompts = collect_prompts(p["prompts"], pf, p["eval_set"])  # parse errors now, not queued
    check_caption_lengths(q.text for q in prompts)
    limits.check_sampling(p["seed"], p["steps"], p["cfg"], p["batch_size"], {"n": p["n"]},
                          len(prompts), cli=False)  # fmt: skip
    check_output_folder(p["out"], p["overwrite"])
    return p


def run_sample(params: dict, report: Reporter) -> dict:
    from engine.model.sample_files import collect_prompts, write_samples

    p = params
    pf = Path(p["prompts_file"]) if p["prompts_file"] else None
    prompts = collect_prompts(p["prompts"], pf, p["eval_set"])
    total, done = len(prompts) * p["n"], 0
    report.progress(0.0, "load")

    def step(k: int):
        nonlocal done
        done += k
        report.progress(0.95 * done / total, "sample")

    out = write_samples(
        p["checkpoint"],
        p["out"],
        prompts,
        p["n"],
        p["seed"],
        p["steps"],
        p["cfg"],
        p["batch_size"],
        p["overwrite"],
        progress=step,
        device=p["device"],
    )
    report.progress(1.0, "done")
    return {"out": str(out), "images": total}
