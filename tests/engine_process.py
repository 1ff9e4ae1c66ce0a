"""A real engine daemon for tests: `python -m engine.service.server` as a subprocess on a cache
folder, with a typed client and a raw HTTP client on its socket; and the waits that go with it.

Tests wait on conditions (`wait_until`), never for a fixed time: under two xdist workers and
other load a fixed sleep is either too short or wasted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

from engine.service import daemon
from engine.service.client import EngineClient, EngineUnavailable

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = {"done", "failed", "cancelled", "interrupted"}
T = TypeVar("T")


def short_tmp(prefix: str = "dwt-") -> Path:
    """A fresh folder under /tmp: Unix socket paths are limited to 107 bytes and pytest's
    tmp_path can be longer. Unique per call, so xdist workers never share one."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def wait_until(
    predicate: Callable[[], T], timeout: float = 20.0, what: str = "condition", poll: float = 0.05
) -> T:
    """The first truthy value of `predicate()`, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


def wait_for_job(client, job_id: int, states=TERMINAL, timeout: float = 20.0) -> dict:
    """The job's record once its state is one of `states`."""

    def reached():
        rec = client.job(job_id)
        return rec if rec["state"] in states else None

    return wait_until(reached, timeout, f"job {job_id} to reach {sorted(states)}")


def pid_gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether process `pid` exits (or is a zombie) within `timeout` seconds."""

    def gone() -> bool:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(")")[-1].split()[0] == "Z"
        except (ProcessLookupError, FileNotFoundError):
            return True

    try:
        return wait_until(gone, timeout, f"pid {pid} to exit")
    except AssertionError:
        return False


class Engine:
    """An engine subprocess on `cache`: `client` (EngineClient) and `http` (plain HTTP over its
    socket, for bodies the typed client would never send)."""

    def __init__(self, cache: Path, *args: str, start_timeout: float = 60.0):
        self.cache = Path(cache)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.service.server", "--cache", str(cache),
             "--log-level", "warning", *args],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.client = EngineClient(cache_dir=cache, timeout=30)
        self.http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(daemon.default_socket(cache))),
            base_url="http://engine",
            timeout=30,
        )
        try:
            wait_until(self._up, start_timeout, "the engine to answer /health")
        except BaseException:
            self.stop(signal.SIGKILL)
            raise

    def _up(self) -> bool:
        try:
            self.client.health()
            return True
        except EngineUnavailable:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited: {self.proc.stderr.read()}") from None
            return False

    def run(self, kind: str, params: dict, timeout: float = 120) -> dict:
        """Submit a job and return its record once it is done (failing the test otherwise)."""
        job = self.client.submit(kind, params)
        rec = wait_for_job(self.client, job["id"], timeout=timeout)
        assert rec["state"] == "done", rec["error"]
        return rec

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the engine and return its exit code (killed if it does not exit in 15 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)
        finally:
            self.client.close()
            self.http.close()
            self.proc.stderr.close()


def fake_checkpoint(d: Path) -> None:
    """The files the engine's checkpoint listing reads, with a tiny weights file (no model, no
    torch): 3 layers x 3 heads, nano, rte, 32 px."""
    import numpy as np
    from safetensors.numpy import save_file

    from engine.model.checkpoint import FORMAT, WEIGHTS

    (d / "transformer").mkdir(parents=True)
    save_file({"w": np.zeros((4, 5), np.float32)}, str(d / "transformer" / WEIGHTS))
    cfg = {"num_layers": 3, "num_attention_heads": 3, "attention_head_dim": 64}
    (d / "transformer" / "config.json").write_text(json.dumps(cfg))
    meta = {
        "format": FORMAT,
        "preset": "nano",
        "text": "rte",
        "codec": "pixel",
        "res": 32,
        "step": 2,
        "hashes": {"transformer": "ab" * 32},
    }
    (d / "workbench.json").write_text(json.dumps(meta))
