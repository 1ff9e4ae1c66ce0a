"""Workbench speed, headless, in one run.

1. Cold start: from creating the app to the first rendered heads table of the shipped
   checkpoint, with the engine already running (it is started first, and its own start time is
   reported separately: a researcher pays it once per server, not per `dit-workbench`).
2. Sort and filter on a 10,000-row table: the engine-side query (`engine.service.tables.query`, what
   every sort key press and filter asks the engine for) and the client's round trip for one
   page over the real socket.
Targets (issue 9): first table < 1 s, sort/filter < 100 ms. The last line states the figures.

    python benchmarks/tui_speed.py [--cache DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import tables  # noqa: E402
from engine.service.client import connect  # noqa: E402
from workbench.app import WorkbenchApp  # noqa: E402


async def first_table(client) -> float:
    t0 = time.perf_counter()
    app = WorkbenchApp(client, poll_interval=3600, health_interval=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        while not app.heads_pane.table.rows_:
            await pilot.pause(0.01)
            if time.perf_counter() - t0 > 30:
                raise RuntimeError("no heads table within 30 s")
        dt = time.perf_counter() - t0
    return dt


def big_table(n: int = 10_000) -> tuple[list[str], list[list]]:
    rng = random.Random(0)
    cols = ["layer", "head", "score", "relation", "delta"]
    rels = ["above", "below", "left", "right"]
    rows = [[i // 100, i % 100, rng.random(), rng.choice(rels), rng.gauss(0, 0.1)]
            for i in range(n)]  # fmt: skip
    return cols, rows


def median_ms(fn, repeats=7) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(ROOT / "cache"))
    args = ap.parse_args()
    import os

    os.chdir(ROOT)  # the engine's default checkpoint root is ./checkpoints
    t0 = time.perf_counter()
    client = connect(args.cache, start=True)
    engine_s = time.perf_counter() - t0
    cold = [asyncio.run(first_table(client)) for _ in range(3)]
    cols, rows = big_table()
    sort_ms = median_ms(lambda: tables.query(cols, rows, sort="score", desc=True, limit=200))
    filt_ms = median_ms(lambda: tables.query(cols, rows, filter="relation=above delta<0",
                                             limit=200))  # fmt: skip
    page_ms = median_ms(lambda: client.table("curves", run="mini-rte", sort="step", desc=True))
    client.close()
    print(f"engine start (once per server): {engine_s:.2f} s")
    print(f"first heads table, app start to rendered: runs {', '.join(f'{c:.2f}' for c in cold)} s")
    print(f"10k-row table: sort {sort_ms:.1f} ms, filter {filt_ms:.1f} ms (engine side, median)")
    print(f"one page over the socket (curves table): {page_ms:.1f} ms (median)")
    print(f"first table {statistics.median(cold):.2f} s (target < 1 s); sort {sort_ms:.0f} ms, "
          f"filter {filt_ms:.0f} ms on 10k rows (target < 100 ms)")  # fmt: skip


if __name__ == "__main__":
    main()
