"""The fake engine (tests/fake_client.py) against a real one: the TUI's tests are only as good as
the fake is faithful. A real engine daemon runs on a temp cache, with a checkpoint (no model,
no torch) and a training run whose metrics.jsonl holds the fake's own curves, so both serve
the same data; the same client calls then go to both, and their answers must have the same
shape (keys, columns, types, error classes, statuses and messages) and, where both come from
the same inputs, the same values.
"""

from __future__ import annotations

import inspect
import json
import shutil

import pytest
from engine_process import Engine, fake_checkpoint, short_tmp, wait_until
from fake_client import FakeEngineClient

from engine.core import columns
from engine.service.client import EngineAPI, EngineClient, EngineError
from engine.service.tables import MAX_LIMIT

RUN = "run-a"
CKPT = "ckpt-x"
# A checkpoint field the fake serves and the engine's /checkpoints does not: the sampler steps
# of its synopsis. The heat map reads it with .get() and falls back to the paper's 14.
FAKE_ONLY = {"steps"}


def _fake_ckpt() -> dict:
    """The fake's entry for what fake_checkpoint writes (3 layers x 3 heads, nano, rte)."""
    return {
        "name": CKPT,
        "path": f"checkpoints/{CKPT}",
        "run": None,
        "hash": "ab" * 32,
        "preset": "nano",
        "text": "rte",
        "codec": "pixel",
        "res": 32,
        "layers": 3,
        "heads": 3,
        "steps": 14,
        "results": {"synopsis": [], "screening": [], "ablation": [], "evaluation": []},
    }


@pytest.fixture(scope="module")
def both():
    """(real client, fake client) serving the same checkpoint and training curves."""
    fake = FakeEngineClient(checkpoints=[_fake_ckpt()], max_limit=MAX_LIMIT, seed_jobs=False)
    work = short_tmp()
    roots = work / "roots"
    run = roots / RUN
    run.mkdir(parents=True)
    curves = fake.table("curves", run=RUN, limit=MAX_LIMIT)
    with open(run / "metrics.jsonl", "w") as f:
        for row in curves["rows"]:
            f.write(json.dumps(dict(zip(curves["columns"], row, strict=True))) + "\n")
    fake_checkpoint(roots / CKPT)
    engine = Engine(work / "cache", "--checkpoints", str(roots))
    try:
        yield engine.client, fake
    finally:
        engine.stop()
        shutil.rmtree(work, ignore_errors=True)


def _refusal(call) -> EngineError:
    with pytest.raises(EngineError) as ei:
        call()
    return ei.value


def _types(d: dict, keys) -> dict:
    return {k: type(d[k]).__name__ for k in keys if d[k] is not None}


# --- the interface --------------------------------------------------------------------------


def test_both_have_the_protocols_methods_with_the_same_signatures():
    names = [n for n in dir(EngineAPI) if not n.startswith("_")]
    assert {"table", "submit", "checkpoints", "jobs"} <= set(names)
    assert isinstance(FakeEngineClient(), EngineAPI)
    assert issubclass(EngineClient, EngineAPI)
    for name in names:
        want = inspect.signature(getattr(EngineAPI, name))
        for cls in (EngineClient, FakeEngineClient):
            got = inspect.signature(getattr(cls, name))
            shape = [(p.name, p.kind, p.default) for p in got.parameters.values()]
            assert shape == [(p.name, p.kind, p.default) for p in want.parameters.values()], (
                f"{cls.__name__}.{name}{got} is not EngineAPI.{name}{want}"
            )


# --- engine and checkpoints -----------------------------------------------------------------


def test_health_has_the_engines_fields(both):
    real, fake = both
    r, f = real.health(), fake.health()
    assert set(f) <= set(r), set(f) - set(r)
    assert _types(f, f) == _types(r, f)


def test_checkpoints_same_fields_and_values(both):
    real, fake = both
    (r,) = [c for c in real.checkpoints() if c["name"] == CKPT]
    (f,) = fake.checkpoints()
    assert set(f) - FAKE_ONLY <= set(r), set(f) - FAKE_ONLY - set(r)
    shared = set(f) - FAKE_ONLY
    assert _types(f, shared) == _types(r, shared)
    for key in ("name", "hash", "preset", "text", "codec", "res", "layers", "heads", "results"):
        assert f[key] == r[key], key


# --- tables ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"sort": "spatial", "desc": True, "limit": 5},
        {"sort": "overall", "offset": 3, "limit": 4},
        {"filter": "step>=5000 spatial<0.9", "sort": "step", "desc": True},
        {"filter": "shape=1", "sort": "color"},
        {"filter": "step!=500 images_seen<=64000"},
        {"filter": "2500"},  # a bare word: a substring of any cell
        {"filter": "step~50", "limit": 2},
        {"filter": '"10000" overall>0'},
    ],
)
def test_curves_pages_are_identical(both, query):
    real, fake = both
    r = real.table("curves", run=RUN, **query)
    f = fake.table("curves", run=RUN, **query)
    assert r["columns"] == f["columns"] == list(columns.CURVES)
    assert r == f
    assert r["total"] > 0 or query.get("filter")


@pytest.mark.parametrize(
    "query",
    [
        {"filter": "colour=red"},
        {"filter": "step>ten"},
        {"filter": '"open'},
        {"sort": "colour"},
        {"offset": -1},
        {"limit": 0},
        {"limit": MAX_LIMIT + 1},
    ],
)
def test_bad_queries_are_refused_alike(both, query):
    real, fake = both
    r = _refusal(lambda: real.table("curves", run=RUN, **query))
    f = _refusal(lambda: fake.table("curves", run=RUN, **query))
    assert (type(f), f.status, str(f)) == (type(r), r.status, str(r)) == (EngineError, 400, str(r))


def test_missing_parameter_and_unknown_table(both):
    real, fake = both
    r = _refusal(lambda: real.table("curves"))
    f = _refusal(lambda: fake.table("curves"))
    assert (type(f), f.status, str(f)) == (type(r), r.status, str(r))
    r = _refusal(lambda: real.table("nosuch"))
    f = _refusal(lambda: fake.table("nosuch"))
    assert (type(f), f.status) == (type(r), r.status) == (EngineError, 404)
    assert str(f).split(";")[0] == str(r).split(";")[0] == "no table 'nosuch'"
    assert set(fake.tables()) <= set(real.tables()), set(fake.tables()) - set(real.tables())


def test_results_missing_for_a_checkpoint_is_a_400_naming_the_command(both):
    real, fake = both
    for name, params in [
        ("heads", {"query": "relation->object1"}),
        ("screening", {"relation": "all"}),
    ]:
        r = _refusal(lambda n=name, p=params: real.table(n, checkpoint=CKPT, **p))
        f = _refusal(lambda n=name, p=params: fake.table(n, checkpoint=CKPT, **p))
        assert (type(f), f.status) == (type(r), r.status) == (EngineError, 400), (name, r, f)


# --- jobs -----------------------------------------------------------------------------------


def _settle(client, job_id: int) -> dict:
    def ended():
        # the fake advances its jobs one step per jobs() poll, the engine by itself
        rec = next(j for j in client.jobs() if j["id"] == job_id)
        return rec if rec["state"] in ("done", "failed", "cancelled", "interrupted") else None

    return wait_until(ended, 20, f"job {job_id} to end")


def test_jobs_submit_list_table_and_refusals(both):
    real, fake = both
    params = {"seconds": 0.2, "steps": 2}
    subs = {c: c.submit("selftest", params) for c in (real, fake)}
    r, f = subs[real], subs[fake]
    assert set(f) <= set(r), set(f) - set(r)
    assert f["kind"] == r["kind"] == "selftest"
    # the engine records the checked params, defaults filled in; the fake, what it was sent
    assert f["params"] == params and r["params"].items() >= params.items()
    assert r["state"] in ("queued", "running") and f["state"] == "queued"
    done = {c: _settle(c, subs[c]["id"]) for c in (real, fake)}
    assert done[real]["state"] == done[fake]["state"] == "done"
    both_set = [k for k in done[fake] if None not in (done[fake][k], done[real].get(k))]
    assert _types(done[fake], both_set) == _types(done[real], both_set)
    for c in (real, fake):
        t = c.table("jobs", sort="id", desc=True, filter="kind=selftest state=done")
        assert t["columns"] == list(columns.JOBS)
        assert t["rows"][0][0] == subs[c]["id"] and t["total"] >= 1
    # refusals: an unknown kind, a job that does not exist
    r = _refusal(lambda: real.submit("nosuch", {}))
    f = _refusal(lambda: fake.submit("nosuch", {}))
    assert (type(f), f.status, str(f)) == (type(r), r.status, str(r))
    for call in ("job", "cancel", "logs"):
        r = _refusal(lambda n=call: getattr(real, n)(99999))
        f = _refusal(lambda n=call: getattr(fake, n)(99999))
        assert (
            (type(f), f.status, str(f))
            == (type(r), r.status, str(r))
            == (
                EngineError,
                404,
                "no job 99999",
            )
        )
