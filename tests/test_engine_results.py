"""The engine's result job kinds and tables (ablate, variance, synopsis, screen) on a real
checkpoint: what a job writes to the cache is what the table request reads back."""

import math
from pathlib import Path

import pytest

from engine.core import roots
from engine.core.errors import UserError
from engine.service.kinds import get_kind
from engine.service.tables import TABLES, query


class Recorder:
    def __init__(self):
        self.fractions, self.lines = [], []

    def progress(self, fraction, phase=None, eta_s=None):
        self.fractions.append(fraction)

    def log(self, line):
        self.lines.append(line)


@pytest.fixture()
def cache(nano_ckpt, tmp_path):
    roots.configure(tmp_path / "cache", [nano_ckpt.parent])
    yield tmp_path / "cache"
    roots.configure("cache")


def _run(kind, params, cwd):
    k = get_kind(kind)
    checked = k.check(params, str(cwd))
    rep = Recorder()
    return k(checked, rep), rep


def test_ablate_job_then_tables(nano_ckpt, cache):
    res, rep = _run(
        "ablate",
        {
            "checkpoint": str(nano_ckpt),
            "interventions": ["mask-head 0.0 tokens=relation"],
            "n": 2,
            "steps": 2,
            "resamples": 50,
        },
        nano_ckpt.parent,
    )
    assert len(res["runs"]) == 1 and rep.fractions and rep.fractions[-1] == pytest.approx(1.0)
    cols, rows = TABLES["ablations"]({"checkpoint": nano_ckpt.name})
    page = query(cols, rows, sort="metric", limit=100)
    assert page["total"] == len(rows) > 0 and set(cols) >= {"delta", "ci_low", "ci_high"}
    res, _ = _run(
        "ablate",
        {
            "checkpoint": str(nano_ckpt),
            "sweep": "mask-head 0.* tokens=relation",
            "n": 2,
            "steps": 2,
            "resamples": 50,
        },
        nano_ckpt.parent,
    )
    cols, rows = TABLES["sweep"]({"checkpoint": nano_ckpt.name, "metric": "spatial"})
    assert sorted((r[0], r[1]) for r in rows) == [(0, 0), (0, 1), (0, 2)]
    assert all(not math.isnan(r[cols.index("delta")]) for r in rows)
    # the sweeps list (the TUI's Ablations pane picks from it); single runs are not sweeps
    cols, rows = TABLES["sweeps"]({"checkpoint": nano_ckpt.name})
    assert [r[cols.index("sweep")] for r in rows] == ["mask-head 0.* tokens=relation"]
    assert rows[0][cols.index("run")] == res["run"] and rows[0][cols.index("n")] == 2
    # GET /checkpoints names the stored runs per kind (the sidebar's results tree)
    from engine.service.tables import list_checkpoints

    (entry,) = [c for c in list_checkpoints() if c["name"] == nano_ckpt.name]
    assert res["run"] in entry["results"]["ablation"] and entry["results"]["synopsis"] == []


def test_result_job_params_are_checked_before_queueing(nano_ckpt, cache):
    with pytest.raises(UserError, match="interventions"):
        get_kind("ablate").check({"checkpoint": str(nano_ckpt)}, None)
    with pytest.raises(UserError, match="positive"):
        get_kind("ablate").check(
            {"checkpoint": str(nano_ckpt), "sweep": "mask-head *.* tokens=relation", "n": 0}, None
        )
    with pytest.raises(UserError):
        TABLES["ablations"]({"checkpoint": "../etc"})


def test_screen_job_then_tables(nano_ckpt, cache):
    res, rep = _run("screen", {"checkpoint": str(nano_ckpt)}, nano_ckpt.parent)
    assert res["run"] and rep.fractions[-1] == 1.0
    cols, rows = TABLES["screening"]({"checkpoint": nano_ckpt.name})
    assert len(rows) == 3 * 3 * 8 and "cosine" in cols
    cols, rows = TABLES["screen_map"](
        {"checkpoint": nano_ckpt.name, "layer": "1", "head": "2", "relation": "above"}
    )
    assert [r[0] for r in rows] == ["qk", "reference"] and len(rows[0][1]) == 8
    with pytest.raises(UserError):
        TABLES["screening"]({"checkpoint": "/etc"})


def test_synopsis_job_then_head_tables(nano_ckpt, cache, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("red square is above blue circle\ncircle left of blue triangle\n")
    res, rep = _run(
        "synopsis",
        {"checkpoint": str(nano_ckpt), "prompts": str(prompts), "n_per_prompt": 1, "steps": 2,
         "detail": 2},
        tmp_path,
    )  # fmt: skip
    assert res["run"].startswith("synopsis-") and rep.fractions[-1] == 1.0
    name = nano_ckpt.name
    cols, rows = TABLES["heads"]({"checkpoint": name, "query": "relation->object1"})
    assert len(rows) == 9 and cols[:3] == ["layer", "head", "score"]
    page = query(cols, rows, sort="score", desc=True, limit=3)
    assert page["total"] == 9 and page["rows"][0][cols.index("rank")] == 1
    cols, rows = TABLES["head_map"]({"checkpoint": name, "query": "shape2->object2", "step": "1"})
    assert len(rows) == 9 and cols == ["layer", "head", "value"]
    cols, rows = TABLES["head_detail"]({"checkpoint": name, "layer": "2", "head": "0"})
    assert len(rows) == 2 * 2 and len(rows[0][cols.index("map")]) == 8
    cols, rows = TABLES["sample_images"]({"checkpoint": name})
    assert len(rows) == 2 and len(rows[0][2]) == 32
    with pytest.raises(UserError, match="unknown query"):
        TABLES["heads"]({"checkpoint": name, "query": "x->y"})
    with pytest.raises(UserError, match="out of range"):
        TABLES["head_detail"]({"checkpoint": name, "layer": "3", "head": "0"})


def test_the_tuis_one_head_form_becomes_a_spec(nano_ckpt, cache):
    p = get_kind("ablate").check(
        {"checkpoint": str(nano_ckpt), "layer": 2, "head": 1, "intervention": "mask",
         "tokens": ["relation", "shape2"], "steps": "0-3", "samples": 16},
        None,
    )  # fmt: skip
    assert p["interventions"] == ["mask-head 2.1 tokens=relation,shape2 steps=0-3"]
    assert p["n"] == 16
    p = get_kind("ablate").check(
        {"checkpoint": str(nano_ckpt), "layer": 0, "head": 0, "intervention": "zero"}, None
    )
    assert p["interventions"] == ["zero-head 0.0"]


def test_a_single_head_ablation_shows_in_the_heads_table(nano_ckpt, cache, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("red square is above blue circle\n")
    _run("synopsis", {"checkpoint": str(nano_ckpt), "prompts": str(prompts), "n_per_prompt": 1,
                      "steps": 2}, tmp_path)  # fmt: skip
    _run("ablate", {"checkpoint": str(nano_ckpt), "layer": 1, "head": 2, "intervention": "mask",
                    "tokens": ["relation"], "samples": 2, "steps": 2, "resamples": 20}, tmp_path)  # fmt: skip
    cols, rows = TABLES["heads"]({"checkpoint": nano_ckpt.name})
    by_head = {(r[0], r[1]): r for r in rows}
    assert by_head[(1, 2)][cols.index("ablation_delta")] is not None


def test_jobs_take_a_checkpoint_by_its_listing_name(nano_ckpt, cache, tmp_path):
    p = get_kind("ablate").check(
        {"checkpoint": nano_ckpt.name, "layer": 0, "head": 0, "intervention": "zero"}, str(tmp_path)
    )
    assert p["checkpoint"] == str(nano_ckpt.resolve())
    p = get_kind("synopsis").check({"checkpoint": nano_ckpt.name}, str(tmp_path))
    assert p["checkpoint"] == str(nano_ckpt.resolve())
    with pytest.raises(UserError, match="not found"):
        get_kind("synopsis").check({"checkpoint": "no-such-ckpt"}, str(tmp_path))


SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "mini-rte"


@pytest.mark.skipif(not (SHIPPED / "cache.h5").is_file(), reason="shipped results not built")
def test_heads_table_joins_the_sweep_of_the_query_category(tmp_path):
    """The shipped mini-rte holds a relation-token sweep and a newer shape-token sweep: a
    relation query shows the relation sweep's spatial delta, a shape query the shape sweep's."""
    from engine.intervene.results import sweep_rows, sweep_runs
    from engine.model.checkpoint import store_for_path
    from engine.ops.heads import heads_rows

    store = store_for_path(SHIPPED, tmp_path / "cache")
    by = {s["sweep"]: s["run"] for s in sweep_runs(store)}
    for q, template, metric in (
        ("relation->object1", "mask-head *.* tokens=relation", "spatial"),
        ("shape1->object1", "mask-head *.* tokens=shape1,shape2", "shape"),
    ):
        want = {
            (r["layer"], r["head"]): r["delta"] for r in sweep_rows(store, by[template], metric)
        }
        rows = heads_rows(store, {"query": q})
        assert len(rows) == 36
        assert all(
            r["ablation_delta"] == pytest.approx(want[(r["layer"], r["head"])]) for r in rows
        )
    top = heads_rows(store, {"query": "relation->object1"})[0]
    assert (top["layer"], top["head"]) == (2, 2) and top["ablation_ci_high"] < 0
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
