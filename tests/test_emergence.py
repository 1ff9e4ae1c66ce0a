"""train --keep-history and `dit-workbench emergence` on a short nano run (issue 22).

The numbers of a 6-step nano run mean nothing; what is checked is the mechanics: the history is
kept (float16, own hash, never pruned), screening a history checkpoint equals screening the same
weights loaded directly after the same float16 rounding, the table's shape and storage, reuse of
stored steps, first-pass steps, the engine's job kind and table, and the report's section.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from clirunner import cli_result
from safetensors.torch import load_file

from engine.core.errors import UserError
from engine.model.checkpoint import WEIGHTS, export_checkpoint, load_checkpoint, sha256_file
from engine.probe import emergence as E
from engine.probe.screening import METRICS, screen, screen_model
from engine.report import emergence_section
from engine.store.cache import Store
from engine.store.emergence import run_store
from engine.train.history import history_checkpoint, history_steps
from engine.train.loop import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


def compute(run, cache, **kw):
    """Emergence of `run` stored in its own cache file under `cache` (as the operation does)."""
    return E.compute_emergence(
        run,
        run_store(run, cache),
        checkpoint_store=lambda ck: Store.for_checkpoint(ck, cache),
        **kw,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hist") / "run"
    cfg = TrainConfig(
        out=str(out),
        preset="nano",
        res=32,
        steps=6,
        batch=4,
        eval_every=2,
        eval_prompts=2,
        eval_steps=2,
        n_train=64,
        log_every=1,
        keep=1,
        keep_history=True,
    )
    train(cfg, progress=lambda rec: None)
    return out


@pytest.fixture(scope="module")
def emerged(run, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return cache, compute(run, cache)


def test_history_is_kept_in_fp16_and_never_pruned(run):
    assert [s for s, _ in history_steps(run)] == [2, 4, 6]
    assert sorted(p.name for p in run.glob("step-*")) == ["step-0000006"]  # --keep 1 pruned
    for _, d in history_steps(run):
        meta = json.loads((d / "workbench.json").read_text())
        assert meta["history"] is True and meta["dtype"] == "float16"
        assert not (d / "train_state").exists() and not (d / "metrics.jsonl").exists()
        assert sha256_file(d / "transformer" / WEIGHTS) == meta["hashes"]["transformer"]
        w = load_file(d / "transformer" / WEIGHTS)
        assert all(t.dtype == torch.float16 for t in w.values() if t.is_floating_point())
    # the history copy of step 6 is exactly the full checkpoint's EMA weights rounded to fp16
    full = load_file(run / "step-0000006" / "transformer" / WEIGHTS)
    half = load_file(run / "history" / "step-0000006" / "transformer" / WEIGHTS)
    assert full.keys() == half.keys()
    for k in full:
        assert torch.equal(full[k].to(torch.float16), half[k])


def test_export_a_history_step(run, tmp_path):
    assert history_checkpoint(run, 4) == run / "history" / "step-0000004"
    with pytest.raises(UserError, match="kept history steps: 2, 4, 6"):
        history_checkpoint(run, 3)
    out = export_checkpoint(history_checkpoint(run, 4), tmp_path / "ex")
    meta = json.loads((out / "workbench.json").read_text())
    assert meta["dtype"] == "float16" and meta["step"] == 4  # stays what the source is
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]  # the run's curves up to that step travel with it


def test_screening_a_history_checkpoint_equals_screening_the_rounded_weights(run, emerged):
    _, e = emerged
    direct = load_checkpoint(run / "step-0000006")
    with torch.no_grad():
        for p in direct.transformer.parameters():
            p.copy_(p.to(torch.float16).to(torch.float32))
    want = screen_model(direct.transformer, direct.text_encoder)
    got = screen(load_checkpoint(run / "history" / "step-0000006"))
    i = e.steps.index(6)
    for m in METRICS:
        np.testing.assert_array_equal(got.scores[m], want.scores[m])
        np.testing.assert_array_equal(e.scores[m][i], want.scores[m])


def test_emergence_table_shape_and_storage(run, emerged):
    cache, e = emerged
    assert e.steps == [2, 4, 6] and e.images_seen == [8, 16, 24]
    assert e.scores["cosine"].shape == (3, 3, 3, 8)  # steps x layers x heads x relations
    for k, (_, d) in enumerate(history_steps(run)):
        assert (
            e.hashes[k] == json.loads((d / "workbench.json").read_text())["hashes"]["transformer"]
        )
    # stored in the run's cache with provenance, readable with plain h5py
    with h5py.File(e.cache) as f:
        g = f["emergence"][e.name]
        assert list(g["steps"][()]) == [2, 4, 6]
        np.testing.assert_array_equal(g["cosine"][()], e.scores["cosine"])
        assert json.loads(g.attrs["params"])["method_version"] == E.METHOD_VERSION
        assert g.attrs["run_path"] == str(run.resolve()) and g.attrs["checkpoint_hash"] == ""
        assert f.attrs["checkpoint_path"] == str(run.resolve())
    # asked again: every step is reused, nothing new is written
    again = compute(run, cache)
    assert again.name == e.name
    assert run_store(run, cache).runs("emergence") == [e.name]
    # the step x head table: one row per step, one column per head, the evaluator beside it
    rows = E.step_rows(e, curves=E.run_curves(run))
    assert [r["step"] for r in rows] == [2, 4, 6]
    heads = [c for c in rows[0] if c.startswith("L")]
    assert len(heads) == 9
    mean = e.scores["cosine"].astype(np.float64).mean(-1)
    assert rows[1]["L2H1"] == round(float(mean[1, 2, 1]), 4)
    assert rows[0]["color"] is not None and "spatial" in rows[0]
    # the top heads are ranked by their score at the last step
    top = e.top_heads(3)
    assert [mean[-1][lh] for lh in top] == sorted((mean[-1][lh] for lh in top), reverse=True)
    assert mean[-1][top[0]] == mean[-1].max()


def test_first_pass_and_pass_rows(emerged, run):
    _, e = emerged
    assert E.first_pass([1, 2, 3, 4], [0.1, 0.6, 0.4, 0.7], 0.5) == 2
    assert E.first_pass([1, 2], [0.1, None], 0.5) is None
    curves = [{"step": 2, "spatial": 0.1}, {"step": 4, "spatial": 0.6}, {"step": 6, "spatial": 0.4}]
    rows = {r["series"]: r for r in E.pass_rows(e, curves, threshold=-1.0, top=2)}
    assert rows["spatial"]["first_pass"] == 4 and rows["spatial"]["stays_from"] is None
    la, h = e.top_heads(1)[0]
    assert rows[E.head_name(la, h)]["first_pass"] == 2  # everything passes a threshold of -1
    assert len([r for r in rows.values() if r["kind"] == "screening"]) == 2


def test_engine_job_and_table(run, tmp_path):
    from engine.core import roots
    from engine.service.kinds import get_kind

    class Rep:
        def __init__(self):
            self.lines, self.fractions = [], []

        def progress(self, f, phase=None, eta_s=None):
            self.fractions.append(f)

        def log(self, line):
            self.lines.append(line)

    cache = tmp_path / "cache"
    kind = get_kind("emergence")
    p = kind.check({"run": str(run), "cache": str(cache)}, cwd=str(tmp_path))
    with pytest.raises(UserError):
        kind.check({"run": str(tmp_path / "nope")}, cwd=str(tmp_path))
    rep = Rep()
    res = kind(p, rep)
    assert res["steps"] == [2, 4, 6] and rep.fractions[-1] == 1.0
    old = (roots.cache_dir(), roots.checkpoint_roots())
    roots.configure(cache, [run.parent])
    try:
        from engine.core.columns import EMERGENCE
        from engine.service.probe_tables import emergence_table

        cols, rows = emergence_table({"run": run.name})
        assert cols == list(EMERGENCE) and len(rows) == 3 * 9
        top = [r for r in rows if r[cols.index("rank")] == 1]
        assert [r[0] for r in top] == [2, 4, 6]
        with pytest.raises(UserError, match="needs run="):
            emergence_table({})
    finally:
        roots.configure(*old)


def test_report_section(run, emerged, tmp_path):
    cache, e = emerged
    lines = "\n".join(emergence_section(run, cache))
    assert f"Emergence run `{e.name}`" in lines and "| step |" in lines
    assert "First step at or above the threshold" in lines
    # no history: the section says how to produce it (the GPU recipe)
    bare = tmp_path / "bare"
    bare.mkdir()
    lines = "\n".join(emergence_section(bare, cache))
    assert "--keep-history" in lines and "dit-workbench emergence" in lines
    assert "Emergence run" not in "\n".join(emergence_section(None, cache))
    # the reproduction report renders it for a checkpoint of a run with history
    from engine.report import build_report

    md = build_report([str(run / "step-0000006")], cache)
    assert "### Emergence of the relation head" in md and f"Emergence run `{e.name}`" in md


def test_cli_csv_and_bad_run(run, emerged, tmp_path):
    cache, e = emerged
    r = cli_result("emergence", run, "--cache", cache, "--format", "csv")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    header = lines[0].split(",")
    assert header[:3] == ["step", "images_seen", "L0H0"] and len(lines) == 4
    assert float(lines[3].split(",")[header.index("L2H2")]) == pytest.approx(
        float(e.scores["cosine"][2, 2, 2].astype(np.float64).mean()), abs=1e-4
    )
    r = cli_result("emergence", tmp_path / "none")
    assert r.returncode == 2 and r.stderr.startswith("error:") and len(r.stderr.splitlines()) == 1


# --- the Training pane (fake engine, 80x24) ----------------------------------------------------


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def _settle(pilot) -> None:
    from textual.worker import WorkerState

    for _ in range(50):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        if not any(
            w.state in (WorkerState.PENDING, WorkerState.RUNNING) for w in pilot.app.workers
        ):
            break


@pytest.mark.anyio
async def test_training_pane_shows_head_emergence_on_the_curves_axis():
    from fake_client import FakeEngineClient

    from workbench.app import WorkbenchApp
    from workbench.components.head_sparks import HeadSparks
    from workbench.render.sparks import head_sparkline, step_column

    # the sparkline: a step's column is where braille_plot puts it; first pass reversed
    t = head_sparkline([(0, 0.0), (50, 0.6), (100, 1.0)], 0, 100, 20, 50, "red")
    assert t.plain == "▁" * 10 + "▅" * 9 + "█"
    assert step_column(50, 0, 100, 20) == 10
    assert [s.style for s in t.spans if "reverse" in str(s.style)][0] and t.spans[10].start == 10

    fake = FakeEngineClient()
    app = WorkbenchApp(fake, poll_interval=3600, health_interval=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot)
        await pilot.press("6")
        await _settle(pilot)
        sparks = app.screen.query_one("#head-sparks", HeadSparks)
        assert [h[0] for h in sparks.heads][0] == "L2H8"  # the planted relation head, ranked 1
        name, pts, first, _ = sparks.heads[0]
        assert len(sparks.heads) == 3 and len(pts) == 20
        assert first == min(s for s, v in pts if v >= 0.5) == 6500
        # the curves plot and the sparklines share the step axis
        plot = app.screen.query_one("#metrics-plot")
        assert plot.xrange == sparks.xrange == (500.0, 10000.0)
        assert sparks.region.height == 4 and sparks.region.width <= 80
        assert "L2H8 6500" in str(sparks.render().plain)
        calls = [kw for a, kw in fake.calls_to("table") if a and a[0] == "emergence"]
        assert calls and calls[-1]["filter"] == "rank<=3"
        # a run with no emergence stored: one dim line saying how to make it, no toast
        app.switch_checkpoint("nano-fresh")
        await _settle(pilot)
        assert sparks.heads == [] and "dit-workbench emergence" in sparks.render().plain


@pytest.mark.slow
def test_synopsis_per_checkpoint(run, tmp_path):
    from engine.probe.ranking import rank_heads

    e = compute(run, tmp_path, synopsis=2, synopsis_steps=2)
    assert e.synopsis.shape == (3, 3, 3) and np.isfinite(e.synopsis).all()
    assert ((0 <= e.synopsis_spatial) & (e.synopsis_spatial <= 1)).all()
    # each checkpoint's synopsis is in its own cache file, named after the run
    ck = load_checkpoint(run / "history" / "step-0000004")
    store = Store.for_checkpoint(ck, tmp_path)
    assert store.path.name.startswith("run-step-0000004-")
    rows = rank_heads(store, store.latest_run("synopsis"), query=E.RELATION_QUERY)
    for r in rows:
        assert e.synopsis[1, r["layer"], r["head"]] == pytest.approx(r["score"], abs=1e-6)
    again = compute(run, tmp_path, synopsis=2, synopsis_steps=2)
    assert again.name == e.name  # stored steps reused, no new run


def test_curves_and_export_know_the_history(run, tmp_path):
    from typer.testing import CliRunner

    from workbench.cli import app

    r = CliRunner().invoke(app, ["curves", str(run), "--format", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["history_steps"] == [2, 4, 6]
    assert [c["history"] for c in doc["curves"]] == ["kept", "kept", "kept"]
    r = CliRunner().invoke(app, ["curves", str(run)])
    assert "dit-workbench emergence" in r.output and "--step N" in r.output
    r = CliRunner().invoke(app, ["export", str(run), "--step", "2", "--out", str(tmp_path / "x")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "x" / "workbench.json").read_text())["step"] == 2
    r = CliRunner().invoke(app, ["export", str(run), "--step", "3", "--out", str(tmp_path / "y")])
    assert isinstance(r.exception, UserError) and "kept history steps" in str(r.exception)
    assert not (tmp_path / "y").exists()


def test_known_value_on_the_gpu_trained_mini_checkpoint(tmp_path):
    """The issue's figure: on mini-rte-lr1e-3 (shipped as checkpoints/mini-rte) screening ranks
    L2H2 first with a mean cosine of 0.61 at step 4800. A run whose history holds that one
    checkpoint must say the same, and put it beside the run's curves."""
    ck = ROOT / "checkpoints" / "mini-rte"
    if not (ck / "workbench.json").is_file():
        pytest.skip("checkpoints/mini-rte is not in this checkout")
    run = tmp_path / "run"
    (run / "history").mkdir(parents=True)
    (run / "history" / "step-0004800").symlink_to(ck)
    (run / "metrics.jsonl").write_text((ck / "metrics.jsonl").read_text())
    e = compute(run, tmp_path / "cache")
    assert e.steps == [4800] and e.images_seen == [2457600]
    assert e.top_heads(1) == [(2, 2)]
    assert e.head_scores()[0, 2, 2] == pytest.approx(0.61, abs=0.005)
    rows = {r["series"]: r for r in E.pass_rows(e, E.run_curves(run), top=1)}
    assert rows["L2H2"]["first_pass"] == 4800
    assert rows["unique_binding"]["first_pass"] == 4000 and rows["spatial"]["first_pass"] is None
