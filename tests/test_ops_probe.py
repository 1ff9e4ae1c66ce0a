"""The probe operations are one code path: `screen` run by the command line in its own process
and `screen` run as an engine daemon job store the same screening of the same checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from engine_process import wait_for_job
from typer.testing import CliRunner

from engine.model.checkpoint import store_for_path
from engine.probe.screening import load_screening


def test_screen_in_the_cli_and_as_an_engine_job_store_the_same_result(
    nano_ckpt, tmp_path, short_tmp, start_engine
):
    from workbench.cli import app

    cli_cache = tmp_path / "cli-cache"
    r = CliRunner().invoke(
        app, ["screen", str(nano_ckpt), "--cache", str(cli_cache), "--best", "--format", "json"]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert len(doc["rows"]) == 9  # 3 layers x 3 heads of the nano model

    work = short_tmp
    root = nano_ckpt.parent.parent
    engine = start_engine(work / "cache", "--checkpoints", str(root))
    # by name under the engine's checkpoint roots, as the workbench submits it (not the bare
    # "run": the engine's cache folder has a run/ of its own, looked in first)
    name = str(nano_ckpt.relative_to(root))
    job = engine.client.submit("screen", {"checkpoint": name})
    rec = wait_for_job(engine.client, job["id"], timeout=180)
    engine.stop()  # its cache file is read below
    assert rec["state"] == "done", rec["error"]
    res = rec["result"]
    assert "rows" not in res and res["seconds"] is not None  # computed, not reused
    a = store_for_path(nano_ckpt, cli_cache)
    b = store_for_path(nano_ckpt, work / "cache")
    assert res["cache"] == str(b.path) != str(a.path)
    assert a.runs("screening") == [doc["run"]] and b.runs("screening") == [res["run"]]
    mine, theirs = a.attrs("screening", doc["run"]), b.attrs("screening", res["run"])
    assert json.loads(mine["params"]) == json.loads(theirs["params"]) == doc["params"]
    assert mine["checkpoint_hash"] == theirs["checkpoint_hash"]
    got, want = load_screening(b, res["run"]), load_screening(a, doc["run"])
    arrays, other = want.arrays(), got.arrays()
    assert arrays.keys() == other.keys()
    for name, value in arrays.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(other[name], value, err_msg=name)
        else:
            assert other[name] == value, name


def test_probe_ops_refuse_bad_params_before_any_model_loads(nano_ckpt, tmp_path):
    from engine.core.errors import UserError
    from engine.ops.emergence import Emergence
    from engine.ops.heads import Heads
    from engine.ops.screen import Screen
    from engine.ops.synopsis import Synopsis

    ck = str(nano_ckpt)
    op = Screen.from_params({"ckpt": ck, "map_head": "2.2", "cache": str(tmp_path)})
    assert op.checkpoint == str((nano_ckpt / "latest").resolve())  # a run names its latest
    for params, needle in (
        ({"map_head": "3.0"}, "layers 0-2, heads 0-2"),
        ({"best": True, "compare": True}, "give one of"),
        ({"compare": True, "no_cache": True}, "drop param 'no_cache'"),
        ({"k": 0, "compare": True}, "param 'k' must be at least 1"),
        ({"relation": "sideways"}, "unknown relation"),
        ({"metric": "dot"}, "cosine, projection, energy"),
    ):
        with pytest.raises(UserError, match=needle):
            Screen.from_params({"checkpoint": ck, **params})
    with pytest.raises(UserError, match="param 'detail' must be >= 0"):
        Synopsis.from_params({"checkpoint": ck, "detail": -1})
    with pytest.raises(UserError, match="unknown query"):
        Heads.from_params({"checkpoint": ck, "query": "relation->sky"})
    with pytest.raises(UserError, match="does not exist"):
        Emergence.from_params({"run": str(tmp_path / "nope")})
    with pytest.raises(UserError, match="once"):
        Emergence.from_params({"run": ck, "run_dir": ck})
