"""Property tests (hypothesis): generated job parameters, JSON bodies, config files, metadata
lines and cache contents, each checked against the bad-input contract:

- a refusal is a UserError (CLI: one `error: ...` line, exit 2; engine: a 4xx with a one-line
  JSON error), never another exception, a traceback or a 5xx;
- whatever is accepted is finite and JSON-serialisable (it goes into jobs.sqlite);
- stored files stay byte-identical, and the engine still answers GET /jobs afterwards.

Each property runs a few examples by default (fast on two cores) and many under `-m slow`.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from clirunner import run_cli  # noqa: E402
from contract import one_line_error, tree_digest  # noqa: E402
from engine_process import Engine, short_tmp  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from engine.core.errors import UserError  # noqa: E402

FAST, MANY = 15, 100
_COMMON = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)


def pair(**strategies):
    """Two tests from one property: FAST examples in the default run, MANY under -m slow."""

    def make(fn):
        fast = settings(max_examples=FAST, **_COMMON)(given(**strategies)(fn))
        many = settings(max_examples=MANY, **_COMMON)(given(**strategies)(fn))
        return fast, pytest.mark.slow(many)  # fn is named: pytest marks it (not a lambda)

    return make


# --- strategies -----------------------------------------------------------------------------

NUMBER_TEXT = st.sampled_from(
    ["nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-0", "0", "1", "4.5", "-1", "1e3", "",
     " ", "0x10", "1_000", str(2**63), str(2**64), str(-(2**63) - 1), "9" * 30, "true", "none"]
)  # fmt: skip
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    NUMBER_TEXT,
    st.booleans(),
    st.none(),
)
JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)

# The numeric params of every kind (from the specs), so the generated dicts hit them.
NUMERIC = {
    "selftest": ["seconds", "steps"],
    "sample": ["n", "seed", "steps", "cfg", "batch_size"],
    "synopsis": ["n_per_prompt", "seed", "steps", "cfg", "batch_size", "detail"],
    "ablate": ["n", "seed", "steps", "cfg", "batch_size", "resamples"],
    "train": ["steps", "batch", "lr", "weight_decay", "ema_decay", "seed", "data_seed", "res"],
    "evaluate": ["workers"],
}


@pytest.fixture(scope="module")
def world(nano_ckpt):
    """A copy of the nano run (never written), an image folder and a prompts file."""
    d = short_tmp()
    step = (nano_ckpt / "latest").resolve()
    ckpt = d / "ckpt"
    shutil.copytree(step, ckpt, ignore=shutil.ignore_patterns("train_state"))
    (d / "prompts.txt").write_text("red square above blue circle\n")
    (d / "busy").mkdir()
    (d / "busy" / "notes.txt").write_text("a non-empty folder that is not an image folder\n")
    from engine.data.files import write_dataset

    write_dataset(d / "images", 2, seed=0, size=32)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _base_params(kind: str, w: Path) -> dict:
    return {
        "selftest": {},
        "sample": {
            "checkpoint": str(w / "ckpt"),
            "out": str(w / "busy"),
            "prompts": ["red square above blue circle"],
        },  # fmt: skip
        "synopsis": {
            "checkpoint": str(w / "ckpt"),
            "prompts": str(w / "prompts.txt"),
            "cache": str(w / "prompts.txt"),
        },  # fmt: skip
        "ablate": {
            "checkpoint": str(w / "ckpt"),
            "interventions": ["mask-head 0.0"],
            "cache": str(w / "prompts.txt"),
        },  # fmt: skip
        "train": {"out": str(w / "busy"), "preset": "nano"},
        "evaluate": {"folder": str(w / "images")},
    }[kind]


# --- job parameters: the engine's validation, in-process -------------------------------------


@st.composite
def job_params(draw):
    kind = draw(st.sampled_from(sorted(NUMERIC)))
    names = draw(st.lists(st.sampled_from(NUMERIC[kind]), min_size=1, max_size=3, unique=True))
    values = {n: draw(NUMBERS) for n in names}
    if draw(st.booleans()):
        values[draw(st.text(min_size=1, max_size=8))] = draw(JSON)  # unknown names too
    return kind, values


def _check_params(world, case):
    from engine.service.kinds import get_kind

    kind, values = case
    before = tree_digest(world / "ckpt", world / "images", world / "prompts.txt")
    params = {**_base_params(kind, world), **values}
    try:
        out = get_kind(kind).check(params, str(world))
    except UserError as e:
        assert "\n" not in str(e) and str(e)
    else:
        # accepted: only finite numbers, storable as JSON (jobs.sqlite) and in int64
        text = json.dumps(out, allow_nan=False)
        for v in json.loads(text).values():
            if isinstance(v, int) and not isinstance(v, bool):
                assert -(2**63) <= v < 2**63
            if isinstance(v, float):
                assert math.isfinite(v)
    assert tree_digest(world / "ckpt", world / "images", world / "prompts.txt") == before


test_job_params, test_job_params_many = pair(case=job_params())(_check_params)


# --- the CLI's number options: one line, exit 2, before any model loads -----------------------


@st.composite
def sample_argv(draw):
    opts = {k: draw(NUMBER_TEXT | st.integers(-(2**70), 2**70).map(str) | st.floats().map(repr))
            for k in draw(st.lists(st.sampled_from(["--n", "--seed", "--steps", "--cfg",
                                                    "--batch-size"]), min_size=1, unique=True))}  # fmt: skip
    return [x for k, v in opts.items() for x in (k, v)]


def _check_sample_cli(world, capsys, monkeypatch, argv):
    before = tree_digest(world / "ckpt", world / "busy")
    # --out is a non-empty folder that is not an image folder: even valid numbers end in a
    # one-line refusal, so no example loads the model.
    args = ["sample", world / "ckpt", "--out", world / "busy", "--prompt", "red square above "
            "blue circle", *argv]  # fmt: skip
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code == 2, (argv, err)
    one_line_error(err)
    assert "Traceback" not in out
    assert tree_digest(world / "ckpt", world / "busy") == before


test_sample_numbers_cli, test_sample_numbers_cli_many = pair(argv=sample_argv())(_check_sample_cli)


# --- config files and checkpoint metadata ------------------------------------------------------

SIZE_KEYS = ["num_layers", "num_attention_heads", "attention_head_dim", "caption_channels",
             "sample_size", "in_channels", "patch_size"]  # fmt: skip
META_KEYS = ["text", "codec", "res", "step", "preset", "dtype"]


@st.composite
def config_edit(draw):
    which = draw(st.sampled_from(["transformer", "meta", "raw"]))
    if which == "raw":
        return which, draw(st.one_of(JSON.map(json.dumps), st.text(max_size=40)))
    keys = SIZE_KEYS if which == "transformer" else META_KEYS
    return which, {k: draw(st.one_of(NUMBERS, JSON)) for k in
                   draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True))}  # fmt: skip


@contextlib.contextmanager
def _edited(path: Path, new: str):
    old = path.read_bytes()
    path.write_text(new)
    try:
        yield
    finally:
        path.write_bytes(old)


def _check_config(world, edit):
    from engine.model.checkpoint import describe
    from engine.ops.params import model_size

    which, change = edit
    ckpt = world / "ckpt"
    if which == "meta":
        path = ckpt / "workbench.json"
        new = json.dumps({**json.loads(path.read_text()), **change})
    else:
        path = ckpt / "transformer" / "config.json"
        new = change if which == "raw" else json.dumps({**json.loads(path.read_text()), **change})
    with _edited(path, new):
        for fn in (describe, model_size):
            try:
                fn(ckpt)
            except UserError as e:
                assert "\n" not in str(e) and len(str(e)) < 2000


test_config_files, test_config_files_many = pair(edit=config_edit())(_check_config)


# --- metadata lines and learning curves ---------------------------------------------------------

LINE = st.one_of(
    JSON.map(json.dumps),
    st.fixed_dictionaries({"file_name": JSON, "text": JSON}).map(json.dumps),
    st.fixed_dictionaries({"step": NUMBERS}).map(lambda d: json.dumps(d, default=str)),
    st.text(max_size=40),
)


def _check_lines(world, lines):
    from engine.eval.evaluate import read_records
    from engine.train.curves import read_curves

    d = world / "lines"
    d.mkdir(exist_ok=True)
    for name in ("metadata.jsonl", "metrics.jsonl"):
        (d / name).write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    for fn in (read_records, read_curves):
        try:
            fn(d)
        except UserError as e:
            assert "\n" not in str(e)


test_metadata_lines, test_metadata_lines_many = pair(lines=st.lists(LINE, min_size=1, max_size=5))(
    _check_lines
)


# --- cache contents -----------------------------------------------------------------------------


@st.composite
def flows_dataset(draw):
    from engine.probe.ranking import BRANCHES, IMAGE_CATS, TEXT_CATS

    good = [2, 2, 2, len(BRANCHES), 2, len(IMAGE_CATS), len(TEXT_CATS)]
    shape = draw(
        st.one_of(
            st.just(good),
            st.lists(st.integers(0, 4), min_size=0, max_size=8),
            st.builds(
                lambda k, v: good[:k] + [v] + good[k + 1 :], st.integers(0, 6), st.integers(0, 9)
            ),  # fmt: skip
        )
    )
    dtype = draw(st.sampled_from(["f4", "f8", "i2", "u1", "S4", "bool"]))
    return shape, dtype


def _check_flows(world, spec):
    import h5py
    import numpy as np

    from engine.probe.ranking import parse_query, query_values
    from engine.store.cache import Store

    shape, dtype = spec
    path = world / "flows.h5"
    with h5py.File(path, "w") as f:
        f.create_group("synopsis/r")["cross"] = np.zeros(shape, dtype=dtype)

    try:
        vals = query_values(Store(path), "r", parse_query("relation->object1"))
        assert vals.ndim == 4
    except UserError as e:
        assert str(path) in str(e) and "\n" not in str(e)


test_cache_contents, test_cache_contents_many = pair(spec=flows_dataset())(_check_flows)


# --- JSON bodies at a live engine ----------------------------------------------------------------


@pytest.fixture(scope="module")
def engine():
    d = short_tmp()
    e = Engine(d / "cache")
    yield e
    e.stop()
    shutil.rmtree(d, ignore_errors=True)


BODY = st.one_of(
    JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "kind": st.sampled_from(["selftest", "sample", "train", "paint", ""]) | JSON_LEAF,
            "params": st.dictionaries(
                st.sampled_from(["seconds", "steps", "fail", "n", "cfg"]),
                NUMBERS | JSON,
                max_size=3,
            )
            | JSON,
        }  # fmt: skip
    ).map(lambda v: json.dumps(v, default=str).encode()),
    st.binary(max_size=60),
    st.integers(1, 200).map(lambda k: b"[" * k + b"]" * k),
)


def _check_body(engine, body):
    r = engine.http.post("/jobs", content=body)
    if r.status_code == 201:  # a valid selftest: take it back
        engine.http.post(f"/jobs/{r.json()['id']}/cancel")
    else:
        assert 400 <= r.status_code < 500, (body[:200], r.status_code, r.text[:300])
        err = r.json()["error"]
        assert isinstance(err, str) and "\n" not in err and "Traceback" not in err
    listing = engine.http.get("/jobs")
    assert listing.status_code == 200, listing.text[:300]
    json.dumps(listing.json(), allow_nan=False)


test_engine_bodies, test_engine_bodies_many = pair(body=BODY)(_check_body)
