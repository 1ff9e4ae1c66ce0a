"""The engine daemon, run for real: a `python -m engine.service.server` subprocess on a temp cache
dir (tests/engine_process.py).

Jobs here are `selftest` (sleeps in steps, no torch) and `evaluate` on a few rendered images,
so every test takes a second or two; a real training job that is interrupted and resumed is
marked slow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from clirunner import cli_result as _cli
from engine_process import Engine, fake_checkpoint, pid_gone, short_tmp, wait_for_job, wait_until

from engine.core.errors import UserError
from engine.service import daemon
from engine.service.client import EngineClient, EngineError, EngineUnavailable, connect
from engine.service.tables import query

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir():
    d = short_tmp()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def engine(workdir):
    roots = workdir / "roots"
    run = roots / "run-a"
    run.mkdir(parents=True)
    with open(run / "metrics.jsonl", "w") as f:
        for k in range(250):
            rec = {
                "step": (k + 1) * 10,
                "images_seen": (k + 1) * 640,
                "color": 1.0,
                "shape": 0.9,
                "exist_binding": 0.5,
                "unique_binding": 0.4,
                "spatial": (k * 37 % 250) / 250,
                "overall": 0.1,
            }
            f.write(json.dumps(rec) + "\n")
        f.write('{"step": 9999, "cut sho')  # a line cut short by a killed run is skipped
    fake_checkpoint(roots / "ckpt-x")
    fake_checkpoint(roots / "run-b" / "step-0000002")
    (roots / "run-b" / "latest").symlink_to("step-0000002")
    (roots / "run-b" / "metrics.jsonl").write_text('{"step": 2, "spatial": 0.5}\n')
    e = Engine(workdir / "cache", "--checkpoints", str(roots))
    yield e
    e.stop()


# --- the daemon -----------------------------------------------------------------------------


def test_health_and_private_socket(engine):
    h = engine.client.health()
    assert h["version"] and h["state"] == "ready" and h["pid"] == engine.proc.pid
    assert h["cache"] == str(engine.cache.resolve())
    sock = daemon.default_socket(engine.cache)
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    # plain HTTP over the socket, as curl --unix-socket does
    r = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock))).get("http://x/health")
    assert r.status_code == 200 and r.json()["pid"] == h["pid"]


def test_second_engine_on_same_cache_is_refused(engine):
    r = subprocess.run(
        [sys.executable, "-m", "engine.service.server", "--cache", str(engine.cache)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert "already running" in r.stderr and str(engine.proc.pid) in r.stderr
    assert engine.client.health()["pid"] == engine.proc.pid  # the first one is untouched


def test_job_streams_progress_to_completion(engine):
    job = engine.client.submit("selftest", {"seconds": 0.6, "steps": 6})
    assert job["state"] in ("queued", "running") and job["kind"] == "selftest"
    assert set(job) >= {
        "id",
        "kind",
        "params",
        "state",
        "progress",
        "phase",
        "eta_s",
        "created",
        "started",
        "ended",
        "result",
        "error",
    }
    seen = list(engine.client.events(job["id"]))
    assert seen[-1]["state"] == "done"
    assert seen[-1]["result"] == {"steps": 6, "seconds": 0.6, "resumed": False}
    progress = [r["progress"] for r in seen]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert any(0 < p < 1 for p in progress)
    assert any(r["phase"] == "sleep" for r in seen)
    lines = engine.client.logs(job["id"])
    assert any("selftest: 6 steps" in ln for ln in lines)
    assert engine.client.logs(job["id"], tail=1) == lines[-1:]


def test_evaluate_job_on_rendered_folder(engine, workdir):
    from engine.data.files import write_dataset

    folder = write_dataset(workdir / "imgs", 4, seed=1, size=64)
    job = engine.client.submit("evaluate", {"folder": str(folder)})
    rec = wait_for_job(engine.client, job["id"])
    assert rec["state"] == "done", rec["error"]
    assert rec["result"]["n"] == 4 and rec["result"]["metrics"]["overall"] == 1.0


def test_dropped_client_does_not_disturb_the_job(engine):
    job = engine.client.submit("selftest", {"seconds": 1.2, "steps": 12})
    watcher = EngineClient(cache_dir=engine.cache)
    stream = watcher.events(job["id"])
    first = next(stream)
    assert first["id"] == job["id"]
    stream.close()  # the client goes away mid-stream
    watcher.close()
    # two other clients follow it at once; both see it finish
    finals = []

    def follow():
        with EngineClient(cache_dir=engine.cache) as c:
            finals.append(list(c.events(job["id"]))[-1])

    threads = [threading.Thread(target=follow) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [f["state"] for f in finals] == ["done", "done"]
    assert engine.client.job(job["id"])["result"]["steps"] == 12


def test_queue_cancel_and_light_jobs_beside_heavy(engine, workdir):
    c = engine.client
    a = c.submit("selftest", {"seconds": 60, "steps": 600})
    b = c.submit("selftest", {"seconds": 1})
    a = wait_for_job(c, a["id"], {"running"})
    assert c.job(b["id"])["state"] == "queued"  # one heavy job at a time
    # a light job (CPU evaluation) does not wait behind the heavy one
    from engine.data.files import write_dataset

    folder = write_dataset(workdir / "imgs2", 2, seed=2, size=64)
    e = c.submit("evaluate", {"folder": str(folder)})
    assert wait_for_job(c, e["id"])["state"] == "done"
    assert c.job(a["id"])["state"] == "running"

    assert c.cancel(b["id"])["state"] == "cancelled"  # queued: cancelled at once
    worker = wait_until(lambda: c.job(a["id"])["pid"], what="the worker's pid")
    c.cancel(a["id"])
    rec = wait_for_job(c, a["id"], timeout=15)
    assert rec["state"] == "cancelled" and rec["ended"] is not None
    assert pid_gone(worker)  # the worker (and whatever GPU memory it held) is gone
    with pytest.raises(EngineError) as ei:
        c.cancel(a["id"])
    assert ei.value.status == 409 and "already cancelled" in str(ei.value)
    assert c.job(b["id"])["started"] is None


def test_bad_requests_answer_4xx_and_change_nothing(engine):
    c = engine.client
    before = c.jobs()
    cases = [
        ("nope", {}, "unknown job kind 'nope'"),
        ("selftest", {"seconds": "soon"}, "param 'seconds' must be a number"),
        ("selftest", {"sleep": 1}, "unknown param 'sleep'"),
        ("evaluate", {}, "needs param 'folder'"),
        ("evaluate", {"folder": "/nonexistent/x"}, "does not exist"),
        ("train", {"out": "/tmp/x", "preset": "huge"}, "unknown preset 'huge'"),
        ("train", {"out": "/tmp/x", "steps": 0}, "param 'steps' must be positive"),
    ]
    for kind, params, msg in cases:
        with pytest.raises(EngineError) as ei:
            c.submit(kind, params)
        assert ei.value.status == 400, (kind, params)
        assert msg in str(ei.value) and "\n" not in str(ei.value)
    sock = str(daemon.default_socket(engine.cache))
    with httpx.Client(transport=httpx.HTTPTransport(uds=sock), base_url="http://x") as h:
        r = h.post("/jobs", content=b"{not json")
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
        r = h.post("/jobs", json={"kind": "selftest", "when": "now"})
        assert r.status_code == 400 and "unknown field 'when'" in r.json()["error"]
        assert h.get("/jobs/99999").status_code == 404
        assert h.get("/jobs/99999/events").status_code == 404
        assert h.get("/tables/curves?run=run-a&limit=zero").status_code == 400
    with pytest.raises(EngineError) as ei:
        c.resume(before[0]["id"])  # a done evaluate/selftest job is not resumable
    assert ei.value.status == 409
    assert c.jobs() == before


# --- tables ---------------------------------------------------------------------------------


def test_table_paging_sort_filter(engine):
    c = engine.client
    page = c.table("curves", run="run-a", offset=100, limit=50)
    assert page["total"] == 250 and len(page["rows"]) == 50
    assert page["columns"][:2] == ["step", "images_seen"] and page["rows"][0][0] == 1010
    top = c.table("curves", run="run-a", sort="spatial", desc=True, limit=3)
    spatial = [r[page["columns"].index("spatial")] for r in top["rows"]]
    assert spatial == sorted(spatial, reverse=True) and spatial[0] == 249 / 250
    assert c.table("curves", run="run-a", filter="step>=2000")["total"] == 51
    assert c.table("curves", run="run-a", filter="step<=100 overall=0.1")["total"] == 10
    assert c.table("curves", run="run-a", filter="1010")["total"] == 1  # substring, any cell
    jobs = c.table("jobs", sort="id", desc=True, limit=1)
    assert jobs["rows"][0][0] == max(j["id"] for j in c.jobs())
    assert "curves" in c.tables() and "jobs" in c.tables()


@pytest.mark.parametrize(
    "run, status, msg",
    [
        ("../roots/run-a", 400, "may not contain '..'"),
        ("/etc", 400, "outside the engine's folders"),
        ("no-such-run", 400, "not found"),
    ],
)
def test_table_names_stay_inside_the_engine_folders(engine, run, status, msg):
    with pytest.raises(EngineError) as ei:
        engine.client.table("curves", run=run)
    assert ei.value.status == status and msg in str(ei.value)


def test_checkpoints_lists_runs_and_checkpoints_under_the_roots(engine):
    found = {c["name"]: c for c in engine.client.checkpoints()}
    assert set(found) == {"ckpt-x", "run-b"}  # run-a has curves but no checkpoint yet
    ck, run = found["ckpt-x"], found["run-b"]
    assert ck["kind"] == "checkpoint" and run["kind"] == "run"
    assert ck["layers"] == 3 and ck["heads"] == 3 and ck["params"] == "0.00M"
    assert ck["hash"] == "ab" * 32 and ck["run"] is None
    assert run["path"].endswith("run-b") and run["latest"].endswith("step-0000002")
    assert run["run"] == run["path"]
    assert engine.client.table("curves", run="run-b")["rows"][0][0] == 2


def test_unknown_table_bad_sort_bad_filter(engine):
    with pytest.raises(EngineError) as ei:
        engine.client.table("nope")
    assert ei.value.status == 404 and "curves" in str(ei.value)
    with pytest.raises(EngineError) as ei:
        engine.client.table("curves", run="run-a", sort="colour")
    assert ei.value.status == 400 and "cannot sort by 'colour'" in str(ei.value)
    for bad, msg in [
        ("colour=red", "unknown column 'colour'"),
        ("step>ten", "needs a number"),
        ('"open', "close the quote"),
    ]:
        with pytest.raises(EngineError) as ei:
            engine.client.table("curves", run="run-a", filter=bad)
        assert ei.value.status == 400 and msg in str(ei.value)


def test_query_on_a_synthetic_table():
    cols = ["layer", "head", "token", "score"]
    rows = [
        [k // 4, k % 4, ["left", "right", "red", None][k % 4], (k * 7) % 11 / 10] for k in range(40)
    ]
    out = query(cols, rows, sort="score", desc=True, offset=0, limit=5)
    assert out["total"] == 40 and len(out["rows"]) == 5
    assert [r[3] for r in out["rows"]] == sorted((r[3] for r in rows), reverse=True)[:5]
    # empty cells sort last both ways
    assert query(cols, rows, sort="token", limit=40)["rows"][-1][2] is None
    assert query(cols, rows, sort="token", desc=True, limit=40)["rows"][-1][2] is None
    assert query(cols, rows, filter="RIGHT")["total"] == 10
    assert query(cols, rows, filter="layer>=8 token!=left")["total"] == 6
    assert query(cols, rows, filter="token~ef")["total"] == 10
    assert query(cols, rows, filter='"red" head=2')["total"] == 10
    assert query(cols, rows, offset=38, limit=5)["rows"] == rows[38:]
    with pytest.raises(UserError):
        query(cols, rows, limit=0)


# --- lifecycle ------------------------------------------------------------------------------


def test_engine_killed_mid_job_restart_marks_interrupted(workdir):
    cache = workdir / "cache-kill"
    e = Engine(cache)
    done = e.client.submit("selftest", {"seconds": 0.2, "steps": 2})
    assert wait_for_job(e.client, done["id"])["state"] == "done"
    long = e.client.submit("selftest", {"seconds": 60, "steps": 600})
    queued = e.client.submit("selftest", {"seconds": 0.2, "steps": 2})
    wait_for_job(e.client, long["id"], {"running"})
    worker = wait_until(lambda: e.client.job(long["id"])["pid"], what="the worker's pid")
    e.stop(signal.SIGKILL)
    assert pid_gone(worker), "the worker outlived its engine"
    sock = daemon.default_socket(cache)
    assert sock.exists()  # left behind by the killed engine: stale

    e2 = Engine(cache)  # replaces the stale socket
    try:
        c = e2.client
        rec = c.job(long["id"])
        assert rec["state"] == "interrupted" and "engine stopped" in rec["error"]
        assert c.job(done["id"])["result"] == {"steps": 2, "seconds": 0.2, "resumed": False}
        assert wait_for_job(c, queued["id"])["state"] == "done"  # the queue carries on
        again = c.resume(long["id"])
        assert again["resumed_from"] == long["id"] and again["params"]["resume"] is True
        c.cancel(again["id"])
        assert wait_for_job(c, again["id"])["state"] == "cancelled"
    finally:
        assert e2.stop() == 0
    assert not sock.exists()  # a clean stop removes its socket


def test_graceful_stop_interrupts_running_jobs(workdir):
    e = Engine(workdir / "cache-term")
    job = e.client.submit("selftest", {"seconds": 60, "steps": 600})
    wait_for_job(e.client, job["id"], {"running"})
    assert e.stop(signal.SIGTERM) == 0
    e2 = Engine(workdir / "cache-term")
    try:
        assert e2.client.job(job["id"])["state"] == "interrupted"
    finally:
        e2.stop()


def test_cli_engine_status_and_stop_leave_jobs_resumable(workdir):
    cache = workdir / "cache-stop"
    e = Engine(cache)
    job = e.client.submit("selftest", {"seconds": 60, "steps": 600})
    wait_for_job(e.client, job["id"], {"running"})
    r = _cli("engine", "status", "--cache", str(cache))
    assert r.returncode == 0, r.stderr
    assert f"pid {e.proc.pid}" in r.stdout and f"1 running ({job['id']} selftest)" in r.stdout
    r = _cli("engine", "stop", "--cache", str(cache))
    assert r.returncode == 0, r.stderr
    assert f"engine stopped (pid {e.proc.pid})" in r.stdout
    assert f"job {job['id']} (selftest) interrupted; resume it with" in r.stdout
    assert e.proc.wait(15) == 0  # it had exited before `stop` returned
    e.client.close()
    r = _cli("engine", "status", "--cache", str(cache))
    assert r.returncode == 1 and "no engine is running" in r.stdout
    from engine.service.records import JobRecords

    records = JobRecords(cache / "jobs.sqlite")
    try:  # recorded as interrupted: `jobs resume` takes it (test_engine_killed_mid_job_...)
        assert records.get(job["id"])["state"] == "interrupted"
    finally:
        records.close()


@pytest.mark.slow  # waits out idle periods in real time
def test_engine_exits_when_idle_but_not_while_a_job_runs(workdir):
    e = Engine(workdir / "cache-idle", "--idle-exit", "0.5")
    try:
        assert e.client.health()["idle_exit_s"] == 0.5
        job = e.client.submit("selftest", {"seconds": 2.0, "steps": 8})
        # no request for three idle-exit periods: only the running job keeps it
        with pytest.raises(subprocess.TimeoutExpired):
            e.proc.wait(1.5)
        assert wait_for_job(e.client, job["id"])["state"] == "done"
        e.client.close()
        assert e.proc.wait(15) == 0  # then, with no job and nobody asking, it went
    finally:
        e.stop()


def test_bad_idle_exit_is_one_line_and_starts_nothing(workdir, monkeypatch, capsys):
    from engine.service import server

    cache = workdir / "cache-bad-idle"
    r = _cli("serve", "--idle-exit", "-1", "--cache", str(cache))
    assert r.returncode == 2 and r.stderr.startswith("error: --idle-exit must be 0")
    monkeypatch.setenv("DIT_WORKBENCH_ENGINE_IDLE_EXIT", "soon")
    assert server.main(["--cache", str(cache)]) == 2  # the engine itself, in this process
    assert capsys.readouterr().err.strip() == (
        "error: DIT_WORKBENCH_ENGINE_IDLE_EXIT='soon' is not a number of seconds"
    )
    assert not daemon.default_socket(cache).exists()


def test_bind_unix_refuses_live_socket_and_other_files(workdir):
    path = workdir / "other.sock"
    live = daemon.bind_unix(path)
    try:
        with pytest.raises(UserError, match="another engine is listening"):
            daemon.bind_unix(path)
    finally:
        live.close()
    stale = daemon.bind_unix(path)  # closed listener: the file is stale and gets replaced
    stale.close()
    (workdir / "plain").write_text("x")
    with pytest.raises(UserError, match="not a socket"):
        daemon.bind_unix(workdir / "plain")
    with pytest.raises(UserError, match="longer than"):
        daemon.bind_unix(workdir / ("x" * 120))


def test_tcp_is_loopback_only_and_needs_the_token(workdir):
    for bad in ("0.0.0.0:8000", "192.168.1.2:8000", "example.com:80", "127.0.0.1"):
        with pytest.raises(UserError):
            daemon.parse_tcp(bad)
    assert daemon.parse_tcp("[::1]:9000") == ("::1", 9000)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache = workdir / "cache-tcp"
    e = Engine(cache, "--tcp", f"127.0.0.1:{port}")
    try:
        tok = daemon.token_path(cache)
        assert stat.S_IMODE(tok.stat().st_mode) == 0o600
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/health").status_code == 401
        bad = httpx.get(f"{url}/health", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and "token" in bad.json()["error"]
        with EngineClient(url=url, cache_dir=cache) as c:  # reads the token file
            assert c.health()["pid"] == e.proc.pid
    finally:
        e.stop()


def test_connect_starts_a_detached_engine(workdir):
    cache = workdir / "cache-auto"
    c = connect(cache, start=True)
    try:
        h = c.health()
        # its own session: no controlling terminal, survives the terminal that started it
        assert os.getsid(h["pid"]) == h["pid"] != os.getsid(0)
        again = connect(cache, start=False)
        assert again.health()["pid"] == h["pid"]
        again.close()
    finally:
        os.kill(h["pid"], signal.SIGTERM)
        c.close()
    assert pid_gone(h["pid"])
    with pytest.raises(EngineUnavailable):
        connect(cache, start=False)


def test_cli_jobs_submit_watch_list(engine):
    common = ["--cache", str(engine.cache)]
    r = _cli(
        "jobs", "submit", "selftest", "-p", "seconds=0.3", "-p", "steps=3", "--watch",
        "--format", "json", *common,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["state"] == "done" and last["params"]["steps"] == 3
    r = _cli("jobs", "list", "--format", "json", *common)
    assert last["id"] in [j["id"] for j in json.loads(r.stdout)]
    r = _cli("jobs", "submit", "selftest", "-p", "secs=1", *common)
    assert r.returncode == 2 and r.stderr.startswith("error: unknown param 'secs'")


def test_cli_param_parsing():
    from workbench.commands.engine import parse_params

    p = parse_params(
        ["steps=10", "lr=1e-4", "resume=true", "out=runs/a", "prompts=a b", "prompts=c d"],
        '{"preset": "nano"}',
    )
    assert p == {
        "preset": "nano",
        "steps": 10,
        "lr": 1e-4,
        "resume": True,
        "out": "runs/a",
        "prompts": ["a b", "c d"],
    }
    with pytest.raises(UserError):
        parse_params(["novalue"], None)


# --- a real training job, interrupted and resumed -------------------------------------------


@pytest.mark.slow
def test_train_job_interrupted_then_resumed(workdir):
    cache, out = workdir / "cache-train", workdir / "run-t"
    params = {
        "out": str(out),
        "preset": "nano",
        "steps": 4,
        "batch": 2,
        "n_train": 16,
        "eval_every": 2,
        "eval_prompts": 2,
        "eval_steps": 2,
        "log_every": 1,
    }
    e = Engine(cache)
    job = e.client.submit("train", params)
    rec = wait_for_job(e.client, job["id"], timeout=300)
    assert rec["state"] == "done", rec["error"]
    assert rec["result"]["metrics"]["step"] == 4
    e.client.submit("train", {**params, "steps": 400, "resume": True})
    long_id = max(j["id"] for j in e.client.jobs())
    # past step 4: training, not loading
    wait_until(lambda: e.client.job(long_id)["progress"] >= 0.02, 300, "training past step 4")
    e.stop(signal.SIGKILL)
    e2 = Engine(cache)
    try:
        c = e2.client
        assert c.job(long_id)["state"] == "interrupted"
        assert c.job(job["id"])["state"] == "done"
        assert (out / "latest").exists()  # earlier results intact
        resumed = c.resume(long_id)
        c.cancel(resumed["id"])
        assert wait_for_job(c, resumed["id"], timeout=60)["state"] == "cancelled"
    finally:
        e2.stop()


def test_tables_are_kept_until_a_cache_file_changes(tmp_path):
    from engine.core import roots
    from engine.service import tables

    roots.configure(tmp_path, [])
    calls = []

    def fn(params):
        calls.append(dict(params))
        return ["a"], [[len(calls)]]

    try:
        first = tables.compute("heads", fn, {"q": "1"})
        assert tables.compute("heads", fn, {"q": "1"}) == first and len(calls) == 1
        tables.compute("heads", fn, {"q": "2"})  # other params: computed
        assert len(calls) == 2
        h5 = tmp_path / "x.h5"
        h5.write_bytes(b"one")  # a store write (a new file replaces the old)
        assert tables.compute("heads", fn, {"q": "1"}) != first and len(calls) == 3
        tmp = tmp_path / "x.h5.tmp"
        tmp.write_bytes(b"two")
        os.replace(tmp, h5)
        tables.compute("heads", fn, {"q": "1"})
        assert len(calls) == 4
        tables.compute("jobs", fn, {})
        tables.compute("jobs", fn, {})  # job records change without any file: never kept
        assert len(calls) == 6
    finally:
        roots.configure(ROOT / "cache", [])
