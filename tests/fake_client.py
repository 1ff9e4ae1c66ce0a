"""A fake engine with the interface of ``engine.service.client.EngineClient`` (the
``EngineAPI`` protocol), for the TUI's tests.

It serves the engine's tables (heads, head_map, head_detail, sample_images, screen_map, screening,
ablations, sweeps, sweep, curves, emergence, jobs) from deterministic synthetic data, with the
engine's column lists (``engine.core.columns``), sorts / filters / pages them with the engine's
own code (``engine.core.rowfilter``), refuses bad requests with the engine's messages, queues
jobs that advance one step per poll, and can be made slow (``delay``) or dead (``alive =
False``) to test that the UI neither freezes nor crashes. tests/test_fake_parity.py holds it to
a real engine's answers. The planted heads follow the paper: a relation head (L2H8 on the 12x12
model) reading relation words at the first step, an object head (L4H3) binding shape words at
steps 4-8.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

from engine.core import columns
from engine.core.columns import IMAGE_CATEGORIES, SCREEN_METRICS
from engine.core.errors import UserError
from engine.core.rowfilter import filter_rows, sort_rows
from engine.data.relations import DIRECTIONS, RELATIONS
from engine.service.client import EngineError, EngineUnavailable
from engine.service.kinds import get_kind
from engine.service.records import TERMINAL
from engine.service.tables import MAX_LIMIT
from engine.text.categories import CATEGORIES as TEXT_CATEGORIES

T0 = 1_763_928_000.0  # fixed epoch for the seeded jobs (2025-11-23 20:00 UTC)


def _refused(message: str) -> EngineError:
    """What EngineClient raises for a request the engine answers with a 400."""
    return EngineError(message, 400)


def _ckpt(name, preset, layers, heads, results, *, text="rte", res=32, steps=14):
    return {
        "name": name,
        "path": f"checkpoints/{name}",
        "run": f"runs/{name}",
        "hash": (name.encode().hex() * 8)[:64],
        "preset": preset,
        "text": text,
        "codec": "pixel",
        "res": res,
        "layers": layers,
        "heads": heads,
        "steps": steps,
        "results": results,
    }


def default_checkpoints() -> list[dict]:
    return [
        _ckpt(
            "dit-b-rte",
            "DiT-B",
            12,
            12,
            {
                "synopsis": ["syn-0001"],
                "screening": ["scr-0001"],
                "ablation": ["abl-0001", "sweep-0002"],
                "evaluation": ["eval-0001"],
            },
        ),
        _ckpt(
            "micro-rte",
            "micro",
            6,
            3,
            {"synopsis": ["syn-0001"], "screening": ["scr-0001"], "ablation": [], "evaluation": []},
        ),
        _ckpt(
            "nano-fresh",
            "nano",
            3,
            3,
            {"synopsis": [], "screening": [], "ablation": [], "evaluation": []},
        ),
    ]


def _parse_steps(steps: Any, n: int) -> list[int]:
    if steps is None or steps == "" or steps == "all":
        return list(range(n))
    if isinstance(steps, int):
        out = [steps]
    else:
        out = []
        try:
            for part in str(steps).split(","):
                part = part.strip()
                if "-" in part:
                    a, b = part.split("-", 1)
                    out.extend(range(int(a), int(b) + 1))
                else:
                    out.append(int(part))
        except ValueError:
            raise _refused(
                f"bad steps {steps!r}: use 'all', a range like 0-13 or a list like 0,4,8"
            ) from None
    bad = [s for s in out if not 0 <= s < n]
    if bad or not out:
        raise _refused(f"bad steps {steps!r}: this checkpoint samples steps 0-{n - 1}")
    return out


def _parse_query(query: Any) -> tuple[str, str]:
    if not isinstance(query, str) or "->" not in query:
        raise _refused(f"bad query {query!r}: write TEXT->IMAGE, e.g. relation->object1")
    text, image = (p.strip() for p in query.split("->", 1))
    if text not in TEXT_CATEGORIES:
        raise _refused(f"unknown text category {text!r}; one of {', '.join(TEXT_CATEGORIES)}")
    if image not in IMAGE_CATEGORIES:
        raise _refused(f"unknown image category {image!r}; one of {', '.join(IMAGE_CATEGORIES)}")
    return text, image


def _r(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


class FakeEngineClient:
    """An EngineAPI: the same methods and parameters as EngineClient (tests/test_tui.py
    checks them); deterministic data; thread-safe."""

    def __init__(
        self,
        *,
        delay: float = 0.0,
        checkpoints: list[dict] | None = None,
        max_limit: int = 100,
        job_steps: int = 3,
        seed_jobs: bool = True,
    ) -> None:
        self.delay = delay
        self.max_limit = max_limit
        self.job_steps = job_steps
        self.alive = True
        self.closed = False
        self.gate: threading.Event | None = None  # when set to an unset Event, every call hangs
        self._lock = threading.RLock()
        self._ckpts = copy.deepcopy(checkpoints or default_checkpoints())
        self._jobs: dict[int, dict] = {}
        self._frozen: set[int] = set()
        self._ids = itertools.count(1)
        self._ablations: dict[str, list[dict]] = {c["name"]: [] for c in self._ckpts}
        self.calls: list[tuple[str, tuple, dict]] = []
        self.submitted: list[tuple[str, dict]] = []
        self._seed_results()
        if seed_jobs:
            self._seed_jobs()

    # ----------------------------------------------------------------- plumbing
    def _enter(self, name: str, *args, **kwargs) -> None:
        with self._lock:
            self.calls.append((name, args, kwargs))
        if self.delay:
            time.sleep(self.delay)
        gate = self.gate
        if gate is not None:
            gate.wait(timeout=60)
        if not self.alive:
            raise EngineUnavailable(
                "engine unreachable: connection refused (is `dit-workbench serve` running?)"
            )
        if self.closed:
            raise EngineError("client is closed")

    def calls_to(self, name: str) -> list[tuple[tuple, dict]]:
        with self._lock:
            return [(a, k) for n, a, k in self.calls if n == name]

    def _ck(self, name: Any) -> dict:
        for c in self._ckpts:
            if c["name"] == name:
                return c
        raise _refused(
            f"unknown checkpoint {name!r}; known: {', '.join(c['name'] for c in self._ckpts)}"
        )

    def _need(self, ck: dict, kind: str, what: str) -> None:
        if not ck["results"].get(kind):
            raise _refused(
                f"no {kind} results for {ck['name']}: run `dit-workbench {what}` (or submit a {what} job) first"
            )

    # ----------------------------------------------------------------- synthetic science
    def _planted(self, ck: dict) -> tuple[tuple[int, int], tuple[int, int]]:
        L, H = ck["layers"], ck["heads"]
        return (min(2, L - 1), min(8, H - 1)), (min(4, L - 1), min(3, H - 1))

    def _value(self, ck: dict, text: str, image: str, layer: int, head: int, step: int) -> float:
        rng = random.Random(f"{ck['name']}|{text}|{image}|{layer}|{head}")
        base = rng.uniform(0.02, 0.35)
        peak = rng.randrange(ck["steps"])
        width = rng.uniform(1.5, 5.0)
        rel_head, obj_head = self._planted(ck)
        if (layer, head) == rel_head and text == "relation":
            base, peak, width = 0.92 if image == "object1" else 0.6, 0, 2.0
        if (layer, head) == obj_head and text in ("shape1", "shape2"):
            base, peak, width = 0.81, 6, 2.5
        return base * math.exp(-(((step - peak) / width) ** 2) / 2) + 0.01 * rng.random()

    def _screen(self, ck: dict, layer: int, head: int, relation: str) -> tuple[float, float, float]:
        rng = random.Random(f"{ck['name']}|screen|{layer}|{head}|{relation}")
        cos = rng.uniform(-0.45, 0.45)
        rel_head, _ = self._planted(ck)
        if (layer, head) == rel_head:
            cos = {"above": 0.93, "below": -0.9, "upper-left": 0.71, "upper-right": 0.68}.get(
                relation, cos * 0.3
            )
        energy = rng.uniform(0.2, 3.0)
        return _r(cos), _r(cos * energy), _r(energy)

    def _seed_results(self) -> None:
        for ck in self._ckpts:
            if ck["results"].get("ablation"):
                rel_head, obj_head = self._planted(ck)
                self._add_ablation(ck, "abl-0001", "mask", [rel_head], ["relation"], "all", 196)
            # a sweep (sweep-0002) is not an ablation row: like the engine, it is listed by the
            # `sweeps` table and read by `sweep`

    def _add_ablation(self, ck, run, kind, heads, tokens, steps, n) -> None:
        rows = self._ablations[ck["name"]]
        rel_head, obj_head = self._planted(ck)
        for layer, head in heads:
            rng = random.Random(f"{ck['name']}|{run}|{layer}|{head}")
            for metric, baseline in (
                ("spatial", 0.67),
                ("shape", 0.9),
                ("color", 0.98),
                ("overall", 0.55),
            ):
                effect = -rng.uniform(0.0, 0.04)
                if (layer, head) == rel_head and metric == "spatial" and "relation" in tokens:
                    effect = -0.34
                if (layer, head) == obj_head and metric == "shape":
                    effect = -0.14
                if kind == "zero":
                    effect *= 1.3
                half = 1.96 * math.sqrt(max(baseline * (1 - baseline), 0.01) / n)
                tok = ",".join(tokens) if kind == "mask" else "output"
                rows.append(
                    {
                        "run": run,
                        "intervention": f"{kind} L{layer}H{head} {tok} @{steps}",
                        "metric": metric,
                        "baseline": _r(baseline),
                        "intervened": _r(baseline + effect),
                        "delta": _r(effect),
                        "ci_low": _r(effect - half),
                        "ci_high": _r(effect + half),
                        "n": n,
                        "_head": (layer, head),
                    }
                )

    def _seed_jobs(self) -> None:
        seeds = [
            ("synopsis", {"checkpoint": "dit-b-rte", "samples": 64}, "done", 1.0, "finished", None),
            (
                "train",
                {"preset": "micro", "steps": 40000},
                "running",
                0.42,
                "step 16800/40000",
                5400.0,
            ),
            ("evaluate", {"checkpoint": "micro-rte"}, "failed", 0.1, "sampling", None),
        ]
        for i, (kind, params, state, prog, phase, eta) in enumerate(seeds):
            jid = next(self._ids)
            self._jobs[jid] = {
                "id": jid,
                "kind": kind,
                "params": params,
                "state": state,
                "progress": prog,
                "phase": phase,
                "eta_s": eta,
                "created": T0 + 60 * i,
                "started": T0 + 60 * i + 1,
                "ended": None if state == "running" else T0 + 600 + 60 * i,
                "result": {"run": "syn-0001"} if state == "done" else None,
                "error": "CUDA out of memory: lower --batch" if state == "failed" else None,
            }
            self._frozen.add(jid)

    # ----------------------------------------------------------------- API
    def health(self) -> dict:
        self._enter("health")
        with self._lock:
            running = sum(1 for j in self._jobs.values() if j["state"] == "running")
            queued = sum(1 for j in self._jobs.values() if j["state"] == "queued")
        return {
            "version": "0.1.0",
            "state": "ready",
            "pid": 4242,
            "cache": "cache",
            "jobs_running": running,
            "jobs_queued": queued,
            "idle_exit_s": 600.0,
            "clients": 0,
        }

    def checkpoints(self) -> list[dict]:
        self._enter("checkpoints")
        with self._lock:
            return copy.deepcopy(self._ckpts)

    def table(
        self,
        name: str,
        *,
        sort: str | None = None,
        desc: bool = False,
        filter: str | None = None,
        offset: int = 0,
        limit: int = 100,
        **params: Any,
    ) -> dict:
        self._enter(
            "table", name, sort=sort, desc=desc, filter=filter, offset=offset, limit=limit, **params
        )
        with self._lock:
            builder = getattr(self, f"_t_{name}", None)
            if builder is None:
                raise EngineError(f"no table {name!r}; tables: {', '.join(self.tables())}", 404)
            cols, rows = builder(**params)
            if offset < 0 or not 0 < limit <= MAX_LIMIT:
                raise _refused(f"offset must be >= 0 and limit in 1..{MAX_LIMIT}")
            try:
                rows = sort_rows(filter_rows(rows, cols, filter), cols, sort, desc)
            except UserError as e:
                raise _refused(str(e)) from None
            limit = min(limit, self.max_limit)  # an engine may cap a page lower than asked
            return {
                "columns": list(cols),
                "rows": copy.deepcopy(rows[offset : offset + limit]),
                "total": len(rows),
            }

    def tables(self) -> list[str]:
        return sorted(n[3:] for n in dir(self) if n.startswith("_t_"))

    def submit(self, kind: str, params: dict) -> dict:
        self._enter("submit", kind, params)
        with self._lock:
            try:
                get_kind(kind)
            except UserError as e:
                raise _refused(str(e)) from None
            if "checkpoint" in params:
                ck = self._ck(params["checkpoint"])
                if kind == "ablate":
                    for key in ("layer", "head"):
                        if not isinstance(params.get(key), int):
                            raise _refused(f"ablate needs an integer {key!r}")
                    if (
                        not 0 <= params["layer"] < ck["layers"]
                        or not 0 <= params["head"] < ck["heads"]
                    ):
                        raise _refused(
                            f"no head L{params['layer']}H{params['head']} in {ck['name']} "
                            f"({ck['layers']} layers x {ck['heads']} heads)"
                        )
                    _parse_steps(params.get("steps"), ck["steps"])
            jid = next(self._ids)
            rec = {
                "id": jid,
                "kind": kind,
                "params": copy.deepcopy(params),
                "state": "queued",
                "progress": 0.0,
                "phase": "queued",
                "eta_s": None,
                "created": time.time(),
                "started": None,
                "ended": None,
                "result": None,
                "error": None,
            }
            self._jobs[jid] = rec
            self.submitted.append((kind, copy.deepcopy(params)))
            return copy.deepcopy(rec)

    def _advance(self) -> None:
        for jid, j in self._jobs.items():
            if jid in self._frozen or j["state"] in TERMINAL:
                continue
            self.step_job(jid)

    def step_job(self, jid: int) -> None:
        """Advance one job by one step (the tests' clock)."""
        with self._lock:
            j = self._jobs[jid]
            if j["state"] in TERMINAL:
                return
            if j["state"] == "queued":
                j.update(state="running", started=time.time(), phase="starting")
            j["progress"] = min(1.0, j["progress"] + 1.0 / max(self.job_steps, 1))
            j["eta_s"] = 2.0 * (1 - j["progress"]) * self.job_steps
            j["phase"] = f"sampling {int(round(j['progress'] * 64))}/64"
            if j["progress"] >= 1.0 - 1e-9:
                self._finish(j)

    def _finish(self, j: dict) -> None:
        j.update(state="done", progress=1.0, eta_s=0.0, phase="finished", ended=time.time())
        p = j["params"]
        if j["kind"] == "ablate":
            ck = self._ck(p["checkpoint"])
            run = f"abl-{j['id']:04d}"
            toks = p.get("tokens") or ["relation"]
            self._add_ablation(
                ck,
                run,
                p.get("intervention", "mask"),
                [(p["layer"], p["head"])],
                toks,
                p.get("steps", "all"),
                int(p.get("samples", 64)),
            )
            ck["results"].setdefault("ablation", []).append(run)
            j["result"] = {"run": run}
        elif j["kind"] == "screen":
            ck = self._ck(p["checkpoint"])
            run = f"scr-{j['id']:04d}"
            ck["results"].setdefault("screening", []).append(run)
            j["result"] = {"run": run}

    def jobs(self) -> list[dict]:
        self._enter("jobs")
        with self._lock:
            self._advance()
            return copy.deepcopy(sorted(self._jobs.values(), key=lambda j: j["id"]))

    def job(self, job_id: int) -> dict:
        self._enter("job", job_id)
        with self._lock:
            if job_id not in self._jobs:
                raise EngineError(f"no job {job_id}", 404)
            return copy.deepcopy(self._jobs[job_id])

    def cancel(self, job_id: int) -> dict:
        self._enter("cancel", job_id)
        with self._lock:
            if job_id not in self._jobs:
                raise EngineError(f"no job {job_id}", 404)
            j = self._jobs[job_id]
            if j["state"] not in TERMINAL:
                j.update(state="cancelled", ended=time.time(), phase="cancelled", eta_s=None)
                self._frozen.discard(job_id)
            return copy.deepcopy(j)

    def logs(self, job_id: int, tail: int = 100) -> list[str]:
        self._enter("logs", job_id, tail=tail)
        with self._lock:
            if job_id not in self._jobs:
                raise EngineError(f"no job {job_id}", 404)
            j = self._jobs[job_id]
            n = 5 + int(20 * j["progress"])
            lines = [f"job {job_id} {j['kind']}: line {i + 1} of {n}" for i in range(n)]
            if j["error"]:
                lines.append(f"error: {j['error']}")
            return lines[-tail:]

    def events(self, job_id: int) -> Iterator[dict]:
        while True:
            rec = self.job(job_id)
            yield rec
            if rec["state"] in TERMINAL:
                return
            self.step_job(job_id)

    def close(self) -> None:
        self.closed = True

    # ----------------------------------------------------------------- tables
    def _t_heads(
        self, checkpoint=None, query="relation->object1", steps=None, agg="max", correct_only=False
    ):
        ck = self._ck(checkpoint)
        self._need(ck, "synopsis", "synopsis")
        text, image = _parse_query(query)
        if agg not in ("max", "mean"):
            raise _refused(f"bad agg {agg!r}: max or mean")
        ss = _parse_steps(steps, ck["steps"])
        heads = [(la, h) for la in range(ck["layers"]) for h in range(ck["heads"])]
        scores, peaks = {}, {}
        for la, h in heads:
            vals = [self._value(ck, text, image, la, h, s) for s in ss]
            scores[la, h] = max(vals) if agg == "max" else sum(vals) / len(vals)
            peaks[la, h] = ss[max(range(len(vals)), key=vals.__getitem__)]
        mu = sum(scores.values()) / len(scores)
        sd = math.sqrt(sum((v - mu) ** 2 for v in scores.values()) / len(scores)) or 1.0
        order = sorted(heads, key=lambda k: -scores[k])
        rank = {k: i + 1 for i, k in enumerate(order)}
        abl = {}
        for row in self._ablations[ck["name"]]:
            if row["metric"] == "spatial":
                abl[row["_head"]] = row  # latest wins
        rows = []
        for la, h in order:
            best = max(RELATIONS, key=lambda r: self._screen(ck, la, h, r)[0])
            a = abl.get((la, h))
            rows.append(
                [
                    la,
                    h,
                    _r(scores[la, h]),
                    rank[la, h],
                    peaks[la, h],
                    _r((scores[la, h] - mu) / sd, 3),
                    41 if correct_only else 64,
                    self._screen(ck, la, h, best)[0],
                    best,
                    a["delta"] if a else None,
                    a["ci_low"] if a else None,
                    a["ci_high"] if a else None,
                ]
            )
        cols = list(columns.HEADS)
        return cols, rows

    def _t_head_map(self, checkpoint=None, query="relation->object1", step="all"):
        ck = self._ck(checkpoint)
        self._need(ck, "synopsis", "synopsis")
        text, image = _parse_query(query)
        if step in (None, "all"):
            ss = list(range(ck["steps"]))
        else:
            ss = _parse_steps(step, ck["steps"])
        rows = []
        for la in range(ck["layers"]):
            for h in range(ck["heads"]):
                vals = [self._value(ck, text, image, la, h, s) for s in ss]
                rows.append([la, h, _r(max(vals))])
        return list(columns.HEAD_MAP), rows

    def _check_head(self, ck, layer, head):
        try:
            layer, head = int(layer), int(head)
        except (TypeError, ValueError):
            raise _refused("layer and head must be integers") from None
        if not (0 <= layer < ck["layers"] and 0 <= head < ck["heads"]):
            raise _refused(
                f"no head L{layer}H{head} in {ck['name']} ({ck['layers']} layers x {ck['heads']} heads)"
            )
        return layer, head

    def _positions(self, ck, sample: int) -> tuple[tuple[float, float], tuple[float, float], str]:
        rng = random.Random(f"{ck['name']}|sample|{sample}")
        rel = RELATIONS[sample % len(RELATIONS)]
        dx, dy = DIRECTIONS[rel]
        cx, cy = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65)
        p1 = (cx + 0.22 * dx, cy + 0.22 * dy)
        p2 = (cx - 0.12 * dx, cy - 0.12 * dy)
        return p1, p2, rel

    def _prompt(self, sample: int, rel: str) -> str:
        s1, s2 = [("square", "circle"), ("circle", "triangle"), ("triangle", "square")][sample % 3]
        return (
            f"red {s1} is {rel.replace('-', ' ')} of blue {s2}"
            if "-" in rel
            else (
                f"red {s1} is {rel} blue {s2}"
                if rel in ("above", "below")
                else f"red {s1} is to the {rel} of blue {s2}"
            )
        )

    def _t_head_detail(self, checkpoint=None, layer=None, head=None, category="relation"):
        ck = self._ck(checkpoint)
        self._need(ck, "synopsis", "synopsis")
        layer, head = self._check_head(ck, layer, head)
        if category not in TEXT_CATEGORIES:
            raise _refused(f"unknown category {category!r}; one of {', '.join(TEXT_CATEGORIES)}")
        rows = []
        for sample in range(4):
            p1, p2, rel = self._positions(ck, sample)
            target = p1 if category in ("relation", "shape1", "color1") else p2
            for step in range(ck["steps"]):
                amp = self._value(ck, category, "object1", layer, head, step) / 0.92
                rng = random.Random(f"{ck['name']}|map|{layer}|{head}|{category}|{sample}|{step}")
                m = []
                for y in range(8):
                    row = []
                    for x in range(8):
                        d2 = ((x + 0.5) / 8 - target[0]) ** 2 + ((y + 0.5) / 8 - target[1]) ** 2
                        row.append(_r(amp * math.exp(-d2 / 0.02) + 0.05 * rng.random(), 3))
                    m.append(row)
                rows.append([sample, self._prompt(sample, rel), step, m])
        return list(columns.HEAD_DETAIL), rows

    def _t_sample_images(self, checkpoint=None):
        ck = self._ck(checkpoint)
        n = ck["res"]
        rows = []
        for sample in range(4):
            p1, p2, rel = self._positions(ck, sample)
            img = [[[128, 128, 128] for _ in range(n)] for _ in range(n)]
            shapes = [("square", "circle"), ("circle", "triangle"), ("triangle", "square")][
                sample % 3
            ]
            for (cx, cy), color, shape in (
                (p2, [0, 0, 255], shapes[1]),
                (p1, [255, 0, 0], shapes[0]),
            ):
                r = n * 0.14
                for y in range(n):
                    for x in range(n):
                        dx, dy = x + 0.5 - cx * n, y + 0.5 - cy * n
                        if shape == "circle":
                            inside = dx * dx + dy * dy <= r * r
                        elif shape == "square":
                            inside = abs(dx) <= r and abs(dy) <= r
                        else:
                            inside = -r <= dy <= r and abs(dx) <= (dy + r) / 2
                        if inside:
                            img[y][x] = list(color)
            rows.append([sample, self._prompt(sample, rel), img])
        return list(columns.SAMPLE_IMAGES), rows

    def _t_screen_map(self, checkpoint=None, layer=None, head=None, relation="above"):
        ck = self._ck(checkpoint)
        self._need(ck, "screening", "screen")
        layer, head = self._check_head(ck, layer, head)
        if relation not in RELATIONS:
            raise _refused(f"unknown relation {relation!r}; one of {', '.join(RELATIONS)}")
        dx, dy = DIRECTIONS[relation]
        norm = math.hypot(dx, dy)
        cos = self._screen(ck, layer, head, relation)[0]
        rng = random.Random(f"{ck['name']}|qk|{layer}|{head}|{relation}")
        ref = [
            [
                _r(
                    ((x - 3.5) * dx + (y - 3.5) * dy)
                    / (3.5 * norm * math.sqrt(2) if dx and dy else 3.5),
                    3,
                )
                for x in range(8)
            ]
            for y in range(8)
        ]
        # the reference ramp is high where object 1 sits: "above" is high in the top rows
        qk = [[_r(cos * v + (1 - abs(cos)) * rng.uniform(-1, 1), 3) for v in row] for row in ref]
        return list(columns.SCREEN_MAP), [["qk", qk], ["reference", ref]]

    def _t_screening(self, checkpoint=None, relation="all", metric="cosine"):
        ck = self._ck(checkpoint)
        self._need(ck, "screening", "screen")
        if relation != "all" and relation not in RELATIONS:
            raise _refused(f"unknown relation {relation!r}; 'all' or one of {', '.join(RELATIONS)}")
        if metric not in SCREEN_METRICS:
            raise _refused(f"unknown metric {metric!r}; {', '.join(SCREEN_METRICS)}")
        rels = RELATIONS if relation == "all" else (relation,)
        rows = []
        for la in range(ck["layers"]):
            for h in range(ck["heads"]):
                for rel in rels:
                    c, p, e = self._screen(ck, la, h, rel)
                    rows.append([la, h, rel, c, p, e])
        mi = 3 + SCREEN_METRICS.index(metric)
        rows.sort(key=lambda r: -r[mi])
        rows = [r + [i + 1] for i, r in enumerate(rows)]
        return list(columns.SCREENING), rows

    def _t_ablations(self, checkpoint=None):
        ck = self._ck(checkpoint)
        cols = list(columns.ABLATIONS)
        return cols, [[r[c] for c in cols] for r in self._ablations[ck["name"]]]

    def _sweep_runs(self, ck: dict) -> list[str]:
        return [r for r in ck["results"].get("ablation", []) if str(r).startswith("sweep")]

    def _t_sweeps(self, checkpoint=None):
        ck = self._ck(checkpoint)
        rows = [
            [r, "mask-head *.* tokens=relation", 64, "all", f"2026-01-0{i + 1}T00:00:00"]
            for i, r in enumerate(self._sweep_runs(ck))
        ]
        return list(columns.SWEEPS), rows

    def _t_sweep(self, checkpoint=None, spec=None, run=None):
        ck = self._ck(checkpoint)
        spec = run or spec
        sweeps = self._sweep_runs(ck)
        if spec is None:  # the newest, as the engine does; no rows when there is none
            if not sweeps:
                return list(columns.SWEEP), []
            spec = sweeps[-1]
        if spec not in sweeps:
            raise _refused(f"ablation run {spec!r} is not a sweep; sweeps: {', '.join(sweeps)}")
        rel_head, obj_head = self._planted(ck)
        rows = []
        for la in range(ck["layers"]):
            for h in range(ck["heads"]):
                rng = random.Random(f"{ck['name']}|{spec}|{la}|{h}")
                d = -0.34 if (la, h) == rel_head else -rng.uniform(-0.02, 0.05)
                rows.append([la, h, "spatial", _r(d), _r(d - 0.07), _r(d + 0.07)])
        return list(columns.SWEEP), rows

    def _t_curves(self, run=None):
        if not run:
            raise _refused("table 'curves' needs run=RUN (a training run folder)")
        rows = []
        for i in range(1, 21):
            step = 500 * i

            def sig(c: float, w: float = 900.0, step: int = step) -> float:
                return _r(1 / (1 + math.exp(-(step - c) / w)))

            color, shape = sig(800), sig(2500)
            exist, unique, spatial = sig(4500), sig(6500), sig(8500, 1200)
            rows.append(
                [step, step * 32, color, shape, exist, unique, spatial, _r(spatial * unique)]
            )
        cols = list(columns.CURVES)
        return cols, rows

    def _t_emergence(self, run=None, threshold=0.5, metric="cosine"):
        """Like the engine's `emergence` table: the planted relation head's mean cosine rises
        (before relations show in the curves), every other head stays low."""
        ck = next((c for c in self._ckpts if c.get("run") == run), None)
        if ck is None or not ck["results"].get("screening"):
            raise _refused(f"no emergence stored for {run!r}; run `dit-workbench emergence {run}`")
        rel = self._planted(ck)[0]
        steps = [500 * i for i in range(1, 21)]
        scores = {}
        for la in range(ck["layers"]):
            for h in range(ck["heads"]):
                if (la, h) == rel:
                    vals = [_r(0.05 + 0.65 / (1 + math.exp(-(s - 5500) / 900))) for s in steps]
                else:
                    rng = random.Random(f"{ck['name']}|emergence|{la}|{h}")
                    base, drift = rng.uniform(-0.15, 0.2), rng.uniform(-0.1, 0.15)
                    vals = [_r(base + drift * k / len(steps)) for k in range(len(steps))]
                scores[(la, h)] = vals
        order = sorted(scores, key=lambda lh: (-scores[lh][-1], lh))
        rows = []
        for rank, (la, h) in enumerate(order, 1):
            vals = scores[(la, h)]
            first = next(
                (s for s, v in zip(steps, vals, strict=True) if v >= float(threshold)), None
            )
            for s, v in zip(steps, vals, strict=True):
                rows.append([s, la, h, f"L{la}H{h}", v, rank, first, None])
        cols = list(columns.EMERGENCE)
        return cols, rows

    def _t_jobs(self):
        cols = list(columns.JOBS)
        return cols, [
            [j[c] for c in cols] for j in sorted(self._jobs.values(), key=lambda j: j["id"])
        ]
