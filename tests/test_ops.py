"""One operation layer (issue 18): train, sample, ablate, variance are each one typed operation
(engine.ops) that the command line runs in-process and the engine runs as a job.

(a) the same ablation and head sweep, run by the CLI and by a real engine daemon, store the
same results; (b) bad input gets the same one-line message from both, each naming the
parameter as that client spells it; (c) each operation's parameters and the command's options
have the same names, types and defaults, so neither can drift from the other.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from pathlib import Path

import numpy as np
import pytest
import typer
from clirunner import run_cli as _cli
from engine_process import Engine

from engine.core.errors import UserError, one_line
from engine.ops.ablate import Ablate
from engine.ops.params import REQUIRED
from engine.ops.sample import Sample
from engine.ops.train import Train
from engine.ops.variance import Variance
from engine.service.kinds import JOB_KINDS, get_kind

ROOT = Path(__file__).resolve().parents[1]
SPEC = "mask-head 0.0 tokens=relation"
SWEEP = "zero-head 0.* steps=0"
FEW = ["--n", "3", "--steps", "2", "--resamples", "50", "--batch-size", "8"]
FEW_PARAMS = {"n": 3, "steps": 2, "resamples": 50, "batch_size": 8}


# --- (a) the CLI and the engine run the same operation --------------------------------------


def _stored(checkpoint: Path, cache: Path) -> dict:
    """Every ablation run in the checkpoint's cache: arrays and provenance, without the fields
    that differ between any two runs (creation time, seconds taken, the process's command)."""
    from engine.model.checkpoint import store_for_path

    store = store_for_path(checkpoint, cache)
    out = {}
    for run in store.runs("ablation"):
        attrs = store.attrs("ablation", run)
        for k in ("created", "seconds", "command"):
            attrs.pop(k, None)
        out[run] = (attrs, store.read("ablation", run))
    return out


def _cli_then_engine(ckpt, args, params, d, capsys, monkeypatch) -> tuple[str, dict]:
    """The CLI's `ablate CKPT ARGS` into d/cli-cache, then an engine on d/engine-cache runs
    the ablate job PARAMS (the engine's default cache is its own folder): (stdout, record)."""
    code, out, err = _cli(["ablate", ckpt, *args, *FEW, "--cache", d / "cli-cache",
                           "--format", "json"], capsys, monkeypatch)  # fmt: skip
    assert code == 0, err
    engine = Engine(d / "engine-cache", "--idle-exit", "0")
    try:
        return out, engine.run("ablate", {"checkpoint": str(ckpt), **params, **FEW_PARAMS})
    finally:
        engine.stop()


def _assert_same_store(ckpt, d, roles: list[str]) -> None:
    a, b = _stored(ckpt, d / "cli-cache"), _stored(ckpt, d / "engine-cache")
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    assert sorted(attrs["role"] for attrs, _ in a.values()) == roles
    for run in a:
        (attrs_a, data_a), (attrs_b, data_b) = a[run], b[run]
        assert attrs_a == attrs_b, run  # the intervention, its params, the baseline run...
        assert sorted(data_a) == sorted(data_b), run
        for k in data_a:  # per-sample scores, deltas, intervals, flips, images
            x, y = np.asarray(data_a[k]), np.asarray(data_b[k])
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), (run, k)


def test_cli_and_engine_store_the_same_ablation(nano_ckpt, short_tmp, capsys, monkeypatch):
    out, job = _cli_then_engine(nano_ckpt, ["-i", SPEC], {"interventions": [SPEC]}, short_tmp,
                                capsys, monkeypatch)  # fmt: skip
    res = json.loads(out)
    # the job record keeps the part of the result that says where it is stored
    assert job["result"] == {"runs": [res["interventions"][0]["run"]],
                             "baseline_run": res["baseline_run"]}  # fmt: skip
    _assert_same_store(nano_ckpt, short_tmp, ["baseline", "intervention"])


@pytest.mark.slow  # a second engine and worker: past the ~20 s a default test may take
def test_cli_and_engine_store_the_same_sweep(nano_ckpt, short_tmp, capsys, monkeypatch):
    out, job = _cli_then_engine(nano_ckpt, ["--sweep", SWEEP], {"sweep": SWEEP}, short_tmp,
                                capsys, monkeypatch)  # fmt: skip
    res = json.loads(out)
    assert job["result"] == {"run": res["run"], "sweep": SWEEP, "sample_sets": 4}
    assert len(res["cells"]) == 3 * len(res["baseline"])  # heads 0.0-0.2, every metric
    _assert_same_store(nano_ckpt, short_tmp, ["baseline", "sweep"])


# --- (b) the same checks, the same messages --------------------------------------------------

S = "red square above blue circle"


def _cases(ck: Path, tmp: Path) -> list[tuple[str, dict, list, dict]]:
    """(job kind, job params, CLI args, how the CLI spells the params the message names)."""
    busy = tmp / "busy"
    busy.mkdir(exist_ok=True)
    (busy / "x.txt").write_text("not empty\n")
    ablate = {"checkpoint": str(ck)}
    return [
        ("ablate", {**ablate, "interventions": [SPEC], "seed": -3},
         ["ablate", ck, "-i", SPEC, "--seed", "-3"], {"seed": "--seed"}),
        ("ablate", {**ablate, "interventions": [SPEC], "cfg": "inf"},
         ["ablate", ck, "-i", SPEC, "--cfg", "inf"], {"cfg": "--cfg"}),
        ("ablate", {**ablate, "interventions": [SPEC], "resamples": 0},
         ["ablate", ck, "-i", SPEC, "--resamples", "0"], {"resamples": "--resamples"}),
        ("ablate", {**ablate, "interventions": [SPEC], "n": 2_000_000},
         ["ablate", ck, "-i", SPEC, "--n", "2000000"], {"n": "--n"}),
        ("ablate", ablate, ["ablate", ck],
         {"interventions": "--intervention", "sweep": "--sweep"}),
        ("ablate", {**ablate, "interventions": [SPEC], "sweep": SWEEP},
         ["ablate", ck, "-i", SPEC, "--sweep", SWEEP],
         {"interventions": "--intervention", "sweep": "--sweep"}),
        ("ablate", {**ablate, "interventions": ["mask-head 7.0"]},
         ["ablate", ck, "-i", "mask-head 7.0"], {}),
        ("ablate", {**ablate, "sweep": "mask-head 0.0"}, ["ablate", ck, "--sweep", "mask-head 0.0"],
         {}),
        ("ablate", {**ablate, "interventions": [SPEC], "device": "tpu"},
         ["ablate", ck, "-i", SPEC, "--device", "tpu"], {}),
        ("variance", {"checkpoint": str(ck), "prompts": str(tmp)},
         ["variance", ck, "--prompts", tmp], {}),
        ("sample", {"checkpoint": str(ck), "out": str(tmp / "s"), "prompts": [S], "n": 0},
         ["sample", ck, "--out", tmp / "s", "--prompt", S, "--n", "0"], {"n": "--n"}),
        ("sample", {"checkpoint": str(ck), "out": str(tmp / "s"), "eval_set": True, "n": 5000},
         ["sample", ck, "--out", tmp / "s", "--eval-set", "--n", "5000"], {"n": "--n"}),
        ("sample", {"checkpoint": str(ck), "out": str(tmp / "s"), "prompts": [S],
                    "eval_set": True},
         ["sample", ck, "--out", tmp / "s", "--prompt", S, "--eval-set"], {}),
        ("sample", {"checkpoint": str(ck), "out": str(busy), "prompts": [S]},
         ["sample", ck, "--out", busy, "--prompt", S], {}),
        ("train", {"out": str(tmp / "t"), "preset": "nano", "steps": 0},
         ["train", "--out", tmp / "t", "--preset", "nano", "--steps", "0"], {"steps": "--steps"}),
        ("train", {"out": str(tmp / "t"), "preset": "nano", "seed": 2**64},
         ["train", "--out", tmp / "t", "--preset", "nano", "--seed", str(2**64)],
         {"seed": "--seed"}),
        ("screen", {"checkpoint": str(ck), "best": True, "map_head": "0.0"},
         ["screen", ck, "--best", "--map", "0.0"],
         {"best": "--best", "tokens": "--tokens", "map_head": "--map", "compare": "--compare"}),
        ("variance", {"checkpoint": str(ck), "cache": str(busy / "x.txt")},
         ["variance", ck, "--cache", busy / "x.txt"], {"cache": "--cache"}),
        ("train", {"out": str(busy), "preset": "nano"}, ["train", "--out", busy, "--preset", "nano"],
         {"resume": "--resume", "out": "--out"}),
        ("train", {"out": str(tmp / "t"), "mixed_precision": "fp8"},
         ["train", "--out", tmp / "t", "--mixed-precision", "fp8"],
         {"mixed_precision": "--mixed-precision"}),
    ]  # fmt: skip


def test_bad_input_gets_one_message_from_the_cli_and_the_engine(
    nano_ckpt, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    cases = _cases(nano_ckpt, tmp_path)
    assert {c[0] for c in cases} == {"ablate", "variance", "sample", "train", "screen"}
    for kind, params, args, spelled in cases:
        with pytest.raises(UserError) as e:
            get_kind(kind).check(params, str(tmp_path))
        engine = str(e.value)
        want = engine
        for name, option in spelled.items():
            assert f"param {name!r}" in engine, engine
            want = want.replace(f"param {name!r}", option)
        code, _, err = _cli(args, capsys, monkeypatch)
        assert code == 2, (args, err)
        assert err == f"error: {one_line(want)}\n", (args, engine)
        assert "\n" not in engine
    assert not (tmp_path / "s").exists() and not (tmp_path / "t").exists()
    assert not (tmp_path / "cache").exists()


def test_from_params_is_the_engines_check(nano_ckpt, tmp_path):
    """The engine's kind checks with the operation's from_params: what one refuses, so does
    the other, and what one accepts comes back the same, paths made absolute."""
    op = Ablate.from_params({"checkpoint": nano_ckpt.name, "layer": 1, "head": 2,
                             "samples": 4, "cache": "c"}, str(nano_ckpt.parent))  # fmt: skip
    assert op.interventions == ["mask-head 1.2 tokens=relation"] and op.n == 4
    assert op.checkpoint == str(nano_ckpt) and op.cache == str(nano_ckpt.parent / "c")
    p = get_kind("ablate").check({"checkpoint": nano_ckpt.name, "layer": 1, "head": 2,
                                  "samples": 4, "cache": "c"}, str(nano_ckpt.parent))  # fmt: skip
    assert p == op.params()
    s = Sample.from_params({"ckpt": str(nano_ckpt), "out": "o", "prompt": S}, str(tmp_path))
    assert s.checkpoint == str(nano_ckpt) and s.prompts == [S]
    assert s.out == str(tmp_path / "o") and s.device == "auto"
    with pytest.raises(UserError, match="unknown param 'colour' for job kind 'variance'"):
        Variance.from_params({"checkpoint": str(nano_ckpt), "colour": "red"}, None)
    with pytest.raises(UserError, match="job kind 'train' needs param 'out'"):
        Train.from_params({}, None)
    t = Train.from_params({"out": "r", "device": "CUDA:1", "steps": "20"}, str(tmp_path))
    assert (t.device, t.steps, t.mixed_precision) == ("cuda:1", 20, "auto")


def test_auto_precision_has_one_rule():
    from engine.ops.train import resolve_precision

    assert resolve_precision("auto", "cpu") == "no"
    assert resolve_precision("fp16", "cpu") == "fp16"  # an explicit choice is kept


# --- (c) the operations' parameters are the commands' options --------------------------------


def _op_commands():
    """(operation, its registered command) for every command generated from an operation."""
    from workbench.cli import app

    def commands(t):
        yield from t.registered_commands
        for g in t.registered_groups:
            yield from commands(g.typer_instance)

    for c in commands(app):
        op = getattr(c.callback, "operation", None)
        if op is not None:
            yield op, c.callback


def _operations() -> list:
    """Every operation class in engine/ops/."""
    import importlib
    import pkgutil

    import engine.ops
    from engine.ops.base import Operation

    found = set()
    for m in pkgutil.iter_modules(engine.ops.__path__):
        module = importlib.import_module(f"engine.ops.{m.name}")
        found |= {v for v in vars(module).values()
                  if isinstance(v, type) and issubclass(v, Operation) and v is not Operation}  # fmt: skip
    return sorted(found, key=lambda o: o.kind)


def test_every_operation_has_its_command():
    assert sorted(op.kind for op, _ in _op_commands()) == [o.kind for o in _operations()]


@pytest.mark.parametrize(
    "op, command", list(_op_commands()), ids=lambda x: getattr(x, "kind", None)
)
def test_a_command_offers_exactly_its_operations_params(op, command):
    """Each declared parameter is an argument or option spelled as declared, with its default
    and type; the command's other options only shape the output (they are not parameters)."""
    hints = typing.get_type_hints(command)
    offered = {}  # as typed on the command line: --batch-size, CKPT
    for name, p in inspect.signature(command).parameters.items():
        info = p.default
        is_arg = isinstance(info, typer.models.ArgumentInfo)
        offered[name.upper() if is_arg else info.param_decls[0]] = (info, hints[name], is_arg)
    for field, p in op.spec().items():
        if not p.cli:
            assert p.option not in offered, field
            continue
        info, hint, is_arg = offered.pop(p.option)
        assert is_arg == bool(p.argument), field
        default = REQUIRED if info.default is ... else info.default
        assert default == (p.default or None if p.type is list else p.default), field
        plain = list if typing.get_origin(hint) is list else hint
        plain = next((a for a in typing.get_args(plain) if a is not type(None)), plain)
        assert {Path: str}.get(plain, plain) is p.type, (field, hint)
    assert set(offered) <= OUTPUT_ONLY, f"{op.kind}: {set(offered)} are neither params nor output"


# Options that shape the output only (the params dict never holds them).
OUTPUT_ONLY = {"--format", "--out", "--metric", "--list", "--view"}


def test_the_engine_only_params_are_few():
    """A parameter the command line does not offer is declared `cli=False`: these, and no more."""
    hidden = {(o.kind, n) for o in _operations() for n, p in o.spec().items() if not p.cli}
    assert hidden == {("train", "null_caption_p"), ("train", "eval_steps"), ("train", "cfg"),
                      ("synopsis", "resume")}  # fmt: skip


def test_train_params_are_the_loops_config(tmp_path):
    """Train is TrainConfig's declaration plus `resume`; the tracked runs' saved settings
    (train_config.json) load as settings, and the loop gets (and saves) them without `resume`."""
    from engine.core.spec import spec_of
    from engine.train.config import TrainConfig

    config = [f.name for f in dataclasses.fields(TrainConfig)]
    assert [n for n in Train.spec() if n not in config] == ["resume"]
    assert all(Train.spec()[n] == p for n, p in spec_of(TrainConfig).items())
    saved = sorted(ROOT.glob("checkpoints/*/train_config.json"))
    assert saved
    for path in saved:
        old = json.loads(path.read_text())
        cfg = TrainConfig(**old)
        cfg.validate()
        assert {k: getattr(cfg, k) for k in old} == old, path
    t = Train.from_params({"out": "r", "steps": "20"}, str(tmp_path))
    assert list(dataclasses.asdict(t.config("no"))) == config


def test_the_api_docs_tables_are_the_declarations():
    from engine.service import apidoc

    text = apidoc.DOC.read_text(encoding="utf-8")
    assert apidoc.rewritten(text) == text, "stale tables: run python -m engine.service.apidoc"


def test_kinds_describe_every_declared_param():
    """GET /kinds answers each kind's declarations: what a client needs to build a form."""
    for name, kind in JOB_KINDS.items():
        d = kind.describe(name)
        assert json.loads(json.dumps(d)) == d  # plain JSON
        spec = kind.spec()
        assert [p["name"] for p in d["params"]] == list(spec)
    sample = {p["name"]: p for p in JOB_KINDS["sample"].describe("sample")["params"]}
    assert sample["checkpoint"] | {"help": ""} == {
        "name": "checkpoint", "type": "str", "required": True, "default": None, "bound": None,
        "choices": [], "help": "", "path": True, "cli": "CKPT", "argument": True,
        "aliases": ["ckpt"]}  # fmt: skip
    assert sample["n"]["bound"] == {"min": 1, "max": 1_000_000, "integer": True}
    assert sample["prompts"]["cli"] == "--prompt" and sample["prompts"]["type"] == "list"


def test_kinds_of_the_operations():
    """Which jobs take the accelerator one at a time (heavy) and which `jobs resume` continues:
    sampling and training are heavy; reading weights or scoring images on the CPU is not."""
    heavy = {name for name, k in JOB_KINDS.items() if k.heavy}
    resumable = {name for name, k in JOB_KINDS.items() if k.resumable}
    assert heavy == {"selftest", "train", "sample", "ablate", "synopsis"}
    assert resumable == {"selftest", "train", "synopsis"}
    assert all(k.help for k in JOB_KINDS.values())
