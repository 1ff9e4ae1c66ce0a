"""Faults tried as they happen on a shared server: the engine or a CLI writer SIGKILLed at random
moments (seeded), and two workbenches on one engine. Nothing reported as written may be lost.

All of them are in the slow set (`pytest -m slow`); the load test runs benchmarks/engine_load.py
for 3 s (8 clients, one job) and wants zero errors. A client dropping an event stream mid-job is
in tests/test_engine_server.py; training killed and resumed bit-for-bit is tests/test_model.py::test_resume_is_bit_for_bit (in-process) and
test_engine_server.py::test_train_job_interrupted_then_resumed (a real engine, SIGKILLed).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from engine_process import Engine, short_tmp, wait_for_job, wait_until

from engine.model.checkpoint import resolve_checkpoint_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(nano_ckpt):
    d = short_tmp()
    ck = d / "roots" / "nano"
    shutil.copytree(
        resolve_checkpoint_dir(nano_ckpt), ck, ignore=shutil.ignore_patterns("train_state")
    )
    yield d, ck
    shutil.rmtree(d, ignore_errors=True)


def _digests(cache: Path) -> dict[str, str]:
    """{kind/run: sha256 of its datasets and attributes} for every run in the cache's HDF5
    files (opening each file also proves it is readable)."""
    import h5py

    out = {}
    for h5 in sorted(cache.glob("*.h5")):
        with h5py.File(h5, "r") as f:
            for kind in f:
                for run, g in f[kind].items():
                    h = hashlib.sha256(
                        json.dumps(sorted((k, str(v)) for k, v in g.attrs.items())).encode()
                    )

                    def add(name, obj, h=h):
                        if isinstance(obj, h5py.Dataset):
                            h.update(name.encode())
                            v = np.asarray(obj[()])  # strings come back as objects: hash values
                            h.update(
                                repr(v.tolist()).encode() if v.dtype == object else v.tobytes()
                            )

                    g.visititems(add)
                    out[f"{kind}/{run}"] = h.hexdigest()
    return out


# --- the engine killed ------------------------------------------------------------------------


def _engine_kill_trials(world, trials: int, seed: int) -> None:
    d, ck = world
    cache = d / f"cache-engine-{seed}-{trials}"
    rng = random.Random(seed)
    done: dict[int, dict] = {}  # job id -> result, as reported before a kill
    stored: dict[str, str] = {}  # screening run -> digest, for runs of jobs reported done
    running: list[int] = []
    for trial in range(trials + 1):
        e = Engine(cache, "--checkpoints", str(ck.parent))
        try:
            c = e.client
            states = {j["id"]: j["state"] for j in c.jobs()}
            for jid, result in done.items():  # every result reported before a kill is kept
                rec = c.job(jid)
                assert rec["state"] == "done" and rec["result"] == result, (trial, rec)
            assert "running" not in states.values(), (trial, states)
            for jid in running:  # seen running just before the kill (or it finished first)
                assert states[jid] in ("interrupted", "done"), (trial, jid, states[jid])
            now = _digests(cache)
            for run, digest in stored.items():
                assert now.get(run) == digest, (trial, run)
                name = run.split("/", 1)[1]  # and the engine serves it again
                assert c.table("screening", checkpoint="nano", run=name)["total"] > 0
            if trial == trials:
                break
            ids = [c.submit("screen", {"checkpoint": "nano"})["id"] for _ in range(2)]
            ids.append(c.submit("selftest", {"steps": 40, "seconds": 2.0})["id"])
            time.sleep(rng.uniform(0.0, 6.0))
            recs = [c.job(i) for i in ids]
        finally:
            e.stop(signal.SIGKILL)
        now = _digests(cache)
        running = [r["id"] for r in recs if r["state"] == "running"]
        for rec in recs:
            if rec["state"] == "done":
                done[rec["id"]] = rec["result"]
                if rec["kind"] == "screen":
                    key = f"screening/{rec['result']['run']}"
                    stored[key] = now[key]
    assert done, "no job finished before any kill: the delays are too short to test anything"


@pytest.mark.slow
def test_engine_sigkilled_loses_nothing_20_trials(world):
    _engine_kill_trials(world, trials=20, seed=0)


# --- a CLI writer killed ----------------------------------------------------------------------


def _cli_kill_trials(world, trials: int, seed: int) -> None:
    d, ck = world
    cache = d / f"cache-cli-{seed}-{trials}"
    prompts = d / "four-prompts.txt"
    prompts.write_text("red square is above blue circle\nblue circle left of red triangle\n"
                       "red triangle below blue square\nblue square right of red circle\n")  # fmt: skip

    def cli(k: int) -> list[str]:  # a new seed is a new synopsis run, written batch by batch
        return [sys.executable, "-m", "workbench.cli", "synopsis", str(ck), "--prompts",
                str(prompts), "--n-per-prompt", "1", "--steps", "2", "--batch-size", "1",
                "--seed", str(k), "--cache", str(cache)]  # fmt: skip

    r = subprocess.run(cli(1000), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    kept = _digests(cache)
    assert len(kept) == 1
    rng = random.Random(seed)
    for trial in range(trials):
        p = subprocess.Popen(cli(trial), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(rng.uniform(0.5, 10.0))  # import, model load, four batches, four writes
        p.send_signal(signal.SIGKILL)
        p.wait(30)
        now = _digests(cache)  # the cache still opens, with every earlier run intact
        for run, digest in kept.items():
            assert now.get(run) == digest, (trial, run)
        kept = now  # what the killed writer had written is a result from now on
    # Leftovers of killed writers (temp files, locks) do not stop the next writer.
    r = subprocess.run(cli(1001), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(_digests(cache)) == len(kept) + 1


@pytest.mark.slow
def test_cli_writer_sigkilled_loses_nothing_20_trials(world):
    _cli_kill_trials(world, trials=20, seed=0)


# --- two workbenches on one engine ------------------------------------------------------------

TUI = """
import asyncio, json, sys, time
from engine.service.client import EngineClient
from workbench.app import WorkbenchApp

async def main(sock, submit):
    app = WorkbenchApp(EngineClient(socket_path=sock, timeout=30), poll_interval=0.2,
                       health_interval=1.0)
    async with app.run_test(size=(100, 30)) as pilot:
        deadline = time.monotonic() + 90
        while not app.heads_pane.table.rows_:
            assert time.monotonic() < deadline, "no heads table"
            await pilot.pause(0.05)
        if submit:
            await pilot.press("x")  # asks first, like `a`
            await pilot.pause(0.5)
            await pilot.press("enter")
        while not any(j.get("kind") == "screen" for j in app.jobs):
            assert time.monotonic() < deadline, "the screening job never showed"
            await pilot.pause(0.1)
        print(json.dumps({"heads": len(app.heads_pane.table.rows_),
                          "screen_jobs": sorted(j["id"] for j in app.jobs
                                                if j.get("kind") == "screen")}))

asyncio.run(main(sys.argv[1], sys.argv[2] == "1"))
"""


@pytest.mark.slow  # three processes, two of them Textual apps
def test_two_workbenches_share_one_engine(world):
    from engine.service.daemon import socket_for

    d, ck = world
    cache = d / "cache-two"
    e = Engine(cache, "--checkpoints", str(ck.parent))
    try:
        prompts = d / "two-prompts.txt"
        prompts.write_text("red square is above blue circle\nblue circle left of red triangle\n")
        job = e.client.submit("synopsis", {"checkpoint": "nano", "prompts": str(prompts),
                                           "n_per_prompt": 1, "steps": 2})  # fmt: skip
        assert wait_for_job(e.client, job["id"], timeout=240)["state"] == "done"
        sock = str(socket_for(cache))
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", TUI, sock, flag],
                cwd=ROOT,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            for flag in ("1", "0")
        ]
        outs = [p.communicate(timeout=240) for p in procs]
        for p, (_, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err[-3000:]
        seen = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
        assert all(s["heads"] > 0 for s in seen)
        # The job one workbench submitted is the one both show.
        assert seen[0]["screen_jobs"] == seen[1]["screen_jobs"] and len(seen[0]["screen_jobs"]) == 1
        jid = seen[0]["screen_jobs"][0]
        assert wait_for_job(e.client, jid, timeout=240)["state"] == "done"
        assert e.client.health()["state"] == "ready"
    finally:
        e.stop()


# --- load -------------------------------------------------------------------------------------


@pytest.mark.slow  # an engine, its worker and 8 clients for 3 s
def test_engine_load_benchmark_runs_without_errors(capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import engine_load

    assert engine_load.main(["--seconds", "3", "--clients", "8"]) == 0
    out = capsys.readouterr().out
    assert "0 errors" in out and "the job ran undisturbed" in out


# --- training killed ----------------------------------------------------------------------------


@pytest.mark.slow
def test_training_sigkilled_then_resumed_matches_the_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file

    def train(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "workbench.cli", "train", "--preset", "nano", "--steps", "8",
                "--batch", "4", "--n-train", "32", "--eval-every", "2", "--eval-prompts", "2",
                "--keep", "10", "--out", str(out), *extra]  # fmt: skip

    straight, killed = tmp_path / "straight", tmp_path / "killed"
    r = subprocess.run(train(straight), capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    p = subprocess.Popen(train(killed), cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)  # fmt: skip
    # killed between checkpoints 4 and 8
    wait_until(lambda: p.poll() is not None or (killed / "step-0000004").is_dir(), 300,
               "checkpoint 4")  # fmt: skip
    assert p.poll() is None, "the run ended before its kill"
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    assert not (killed / "step-0000008").exists()
    r = subprocess.run(train(killed, "--resume"), capture_output=True, text=True, cwd=ROOT,
                       timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    for f in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        a = load_file(straight / "step-0000008" / "train_state" / f)
        b = load_file(killed / "step-0000008" / "train_state" / f)
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), f
