"""The engine under load: 8 clients polling tables while a real job runs, for a bounded time.

An engine is started on a private copy of the shipped checkpoint's cache (the real one is never
written), a `sample` job on the shipped checkpoint runs in its worker process, and 8 client
threads, each with its own connection, poll what the workbench polls: the heads table (sorted,
filtered, paged), the map, head detail, screening, the ablation sweep, the job list, the running
job and /health. Every request's latency is recorded; any error (a non-2xx answer, a timeout, a
dropped connection) is counted. The job is cancelled at the end if it is still running.

Issue 11 asks for the latency percentiles and that nothing errored; there is no speed target.
Exit status 1 if any request errored or the job failed.

    python benchmarks/engine_load.py [--seconds 60] [--clients 8] [--checkpoint checkpoints/micro-rte-s8000]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.service.client import EngineClient, EngineError, EngineUnavailable  # noqa: E402
from engine.service.daemon import socket_for  # noqa: E402


def requests(ck: str, job_id: int) -> list[tuple[str, callable]]:
    """(endpoint label, call) pairs: the workbench's polling mix."""
    q = {"checkpoint": ck, "query": "relation->object1"}
    return [
        ("heads", lambda c: c.table("heads", **q, limit=50)),
        ("heads sort", lambda c: c.table("heads", **q, sort="score", desc=True, limit=50)),
        ("heads filter", lambda c: c.table("heads", **q, filter="layer>=2", offset=10, limit=10)),
        ("head_map", lambda c: c.table("head_map", **q)),
        ("head_detail", lambda c: c.table("head_detail", checkpoint=ck, layer=1, head=0)),
        ("screening", lambda c: c.table("screening", checkpoint=ck, limit=50)),
        ("sweep", lambda c: c.table("sweep", checkpoint=ck, limit=50)),
        ("jobs", lambda c: c.jobs()),
        ("job", lambda c: c.job(job_id)),
        ("health", lambda c: c.health()),
    ]


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def run(seconds: float, clients: int, checkpoint: Path, cache: Path | None) -> int:
    work = Path(tempfile.mkdtemp(prefix="dwl-", dir="/tmp"))  # short: Unix socket paths
    src_cache = cache or ROOT / "cache"
    (work / "cache").mkdir()
    for h5 in src_cache.glob("*.h5"):
        shutil.copy2(h5, work / "cache" / h5.name)
    engine = subprocess.Popen(
        [sys.executable, "-m", "engine.service.server", "--cache", str(work / "cache"),
         "--checkpoints", str(checkpoint.parent), "--log-level", "warning"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    sock = socket_for(work / "cache")
    main = None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                main = EngineClient(socket_path=sock, timeout=30)
                main.health()
                break
            except EngineUnavailable:
                if main:
                    main.close()
                if time.monotonic() > deadline or engine.poll() is not None:
                    err = (engine.stderr.read() or "")[-500:]
                    raise SystemExit(f"engine did not start: {err}") from None
                time.sleep(0.2)
        ck = checkpoint.name
        job = main.submit("sample", {"checkpoint": str(checkpoint), "out": str(work / "samples"),
                                     "eval_set": True, "n": 4})  # fmt: skip
        job_id = job["id"]
        calls = requests(ck, job_id)
        lat: dict[str, list[float]] = defaultdict(list)
        errors: dict[str, list[str]] = defaultdict(list)
        lock = threading.Lock()
        stop = time.monotonic() + seconds

        def poll(k: int) -> None:
            rng = random.Random(k)
            with EngineClient(socket_path=sock, timeout=30) as c:
                while time.monotonic() < stop:
                    name, call = rng.choice(calls)
                    t0 = time.perf_counter()
                    try:
                        call(c)
                        ok, msg = True, ""
                    except (EngineError, EngineUnavailable) as e:
                        ok, msg = False, str(e)
                    dt = (time.perf_counter() - t0) * 1000
                    with lock:
                        lat[name].append(dt)
                        if not ok:
                            errors[name].append(msg)
                    time.sleep(rng.uniform(0.0, 0.05))  # a poller, not a flood

        print(f"engine load: {clients} clients for {seconds:.0f} s on {ck}, with job "
              f"{job_id} (sample, eval set x 4) running", flush=True)  # fmt: skip
        threads = [threading.Thread(target=poll, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rec = main.job(job_id)
        job_state, progress = rec["state"], rec.get("progress") or 0.0
        if job_state in ("queued", "running"):
            main.cancel(job_id)
        job_ok = job_state in ("queued", "running", "done")

        print(f"\n{'endpoint':<14}{'requests':>9}{'errors':>7}{'p50 ms':>9}{'p90 ms':>9}"
              f"{'p99 ms':>9}{'max ms':>9}")  # fmt: skip
        every = [x for v in lat.values() for x in v]
        for name in [n for n, _ in calls] + ["all"]:
            xs = every if name == "all" else lat[name]
            ne = sum(map(len, errors.values())) if name == "all" else len(errors[name])
            print(f"{name:<14}{len(xs):>9}{ne:>7}{percentile(xs, 50):>9.1f}"
                  f"{percentile(xs, 90):>9.1f}{percentile(xs, 99):>9.1f}{max(xs, default=0):>9.1f}")  # fmt: skip
        n_err = sum(map(len, errors.values()))
        for name, msgs in errors.items():
            if msgs:
                print(f"  {name}: {msgs[0]}")
        print(f"\njob {job_id}: {job_state} at {100 * progress:.0f}% when the clients stopped")
        print(f"RESULT: {len(every)} requests from {clients} clients in {seconds:.0f} s, "
              f"{n_err} errors; p50 {percentile(every, 50):.1f} ms, p90 "
              f"{percentile(every, 90):.1f} ms, p99 {percentile(every, 99):.1f} ms, max "
              f"{max(every, default=0):.1f} ms; the job {'ran undisturbed' if job_ok else 'FAILED'}")  # fmt: skip
        return 0 if n_err == 0 and job_ok else 1
    finally:
        if main:
            main.close()
        engine.terminate()
        try:
            engine.wait(timeout=30)
        except subprocess.TimeoutExpired:
            engine.kill()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the clients poll")
    ap.add_argument("--clients", type=int, default=8, help="polling clients")
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "micro-rte-s8000")
    ap.add_argument("--cache", type=Path, default=None,
                    help="folder holding the checkpoint's cache (copied, never written): ./cache")  # fmt: skip
    a = ap.parse_args(argv)
    return run(a.seconds, a.clients, a.checkpoint.resolve(), a.cache)


if __name__ == "__main__":
    sys.exit(main())
