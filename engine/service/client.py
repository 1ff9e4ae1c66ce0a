"""Typed client of the engine daemon (httpx over its Unix socket, or loopback TCP + token).

This is the only way the TUI and the `jobs` CLI talk to the engine:

    client = connect("cache")          # starts a detached engine if none is running
    job = client.submit("evaluate", {"folder": "samples/"})
    for rec in client.events(job["id"]):
        print(rec["state"], rec["progress"])

Job records are dicts: id, kind, params, state, progress, phase, eta_s, created, started,
ended (Unix times), result, error (and log, pid, resumed_from).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx

from engine.service import daemon


class EngineError(Exception):
    """The engine refused a request (the one-line message it gave), or could not be reached."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class EngineUnavailable(EngineError):
    """No engine answers at the socket or address."""


@runtime_checkable
class EngineAPI(Protocol):
    """What the TUI asks of an engine: EngineClient, and the tests' fake engine
    (tests/fake_client.py), which tests/test_fake_parity.py holds to the same answers. A call
    the engine refuses raises EngineError."""

    def health(self) -> dict: ...

    def checkpoints(self) -> list[dict]: ...

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
    ) -> dict: ...

    def submit(self, kind: str, params: dict) -> dict: ...

    def jobs(self) -> list[dict]: ...

    def job(self, job_id: int) -> dict: ...

    def cancel(self, job_id: int) -> dict: ...

    def logs(self, job_id: int, tail: int = 100) -> list[str]: ...

    def events(self, job_id: int) -> Iterator[dict]: ...

    def close(self) -> None: ...


class EngineClient:
    def __init__(
        self,
        socket_path: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
    ):
        self.timeout = timeout
        headers = {}
        if url:
            # TCP: the engine wants its token; read it from the cache dir when not given.
            self.where = url
            token = token or (daemon.read_token(cache_dir) if cache_dir else None)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            transport, base = httpx.HTTPTransport(), url.rstrip("/")
        else:
            path = Path(socket_path) if socket_path else daemon.socket_for(cache_dir or "cache")
            self.where = str(path)
            transport, base = httpx.HTTPTransport(uds=str(path)), "http://engine"
        self.local = not url
        self._http = httpx.Client(
            transport=transport, base_url=base, timeout=timeout, headers=headers
        )

    # --- plumbing -----------------------------------------------------------------------

    def _raise_for(self, r: httpx.Response) -> None:
        if r.status_code < 400:
            return
        try:
            msg = r.json().get("error") or r.text
        except (ValueError, AttributeError):
            msg = r.text.strip() or r.reason_phrase
        raise EngineError(
            str(msg).strip().splitlines()[0] if msg else f"HTTP {r.status_code}", r.status_code
        )

    def _call(self, method: str, path: str, timeout: float | None = None, **kw):
        try:
            r = self._http.request(method, path, timeout=timeout or self.timeout, **kw)
        except httpx.ConnectError as e:
            raise EngineUnavailable(
                f"no engine answers at {self.where} ({e}); start one with `dit-workbench serve`"
            ) from None
        except httpx.TimeoutException:
            raise EngineError(f"the engine at {self.where} did not answer in time") from None
        except httpx.TransportError as e:
            raise EngineError(f"lost the connection to the engine at {self.where}: {e}") from None
        self._raise_for(r)
        return r.json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- engine -------------------------------------------------------------------------

    def health(self) -> dict:
        return self._call("GET", "/health")

    def shutdown(self) -> dict:
        """Ask the engine to stop: running jobs become interrupted (resumable kinds can be
        resumed), queued ones wait for the next engine. Returns {"pid", "interrupting"}."""
        return self._call("POST", "/shutdown")

    def kinds(self) -> list[dict]:
        return self._call("GET", "/kinds")["kinds"]

    def checkpoints(self) -> list[dict]:
        return self._call("GET", "/checkpoints", timeout=max(self.timeout, 60.0))["checkpoints"]

    def tables(self) -> list[str]:
        return self._call("GET", "/tables")["tables"]

    def table(
        self,
        name: str,
        *,
        sort: str | None = None,
        desc: bool = False,
        filter: str | None = None,
        offset: int = 0,
        limit: int = 100,
        **params,
    ) -> dict:
        """One page of a table: {"columns", "rows", "total"} (total counts filtered rows)."""
        q = {k: v for k, v in params.items() if v is not None}
        q.update(offset=offset, limit=limit, desc=int(bool(desc)))
        if sort:
            q["sort"] = sort
        if filter:
            q["filter"] = filter
        return self._call("GET", f"/tables/{name}", params=q, timeout=max(self.timeout, 60.0))

    # --- jobs ---------------------------------------------------------------------------

    def submit(self, kind: str, params: dict) -> dict:
        body = {"kind": kind, "params": params}
        if self.local:  # relative paths in params mean the caller's directory
            body["cwd"] = os.getcwd()
        return self._call("POST", "/jobs", json=body, timeout=max(self.timeout, 60.0))

    def jobs(self) -> list[dict]:
        return self._call("GET", "/jobs")["jobs"]

    def job(self, job_id: int) -> dict:
        return self._call("GET", f"/jobs/{int(job_id)}")

    def cancel(self, job_id: int) -> dict:
        return self._call("POST", f"/jobs/{int(job_id)}/cancel")

    def resume(self, job_id: int) -> dict:
        """A new job continuing a stopped resumable one (a training run from its checkpoint)."""
        return self._call("POST", f"/jobs/{int(job_id)}/resume", timeout=max(self.timeout, 60.0))

    def logs(self, job_id: int, tail: int = 100) -> list[str]:
        return self._call("GET", f"/jobs/{int(job_id)}/logs", params={"tail": tail})["lines"]

    def events(self, job_id: int) -> Iterator[dict]:
        """Job records as they change (server-sent events), ending when the job ends.
        Closing the iterator early only closes this stream; the job goes on."""
        # The engine sends a keep-alive every 15 s, so 60 s of silence means it is gone.
        timeout = httpx.Timeout(self.timeout, read=60.0)
        try:
            with self._http.stream("GET", f"/jobs/{int(job_id)}/events", timeout=timeout) as r:
                if r.status_code >= 400:
                    r.read()
                    self._raise_for(r)
                event, data = "message", []
                for line in r.iter_lines():
                    if line == "":
                        if data and event == "job":
                            yield json.loads("\n".join(data))
                        event, data = "message", []
                    elif line.startswith(":"):
                        continue
                    else:
                        field, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if field == "event":
                            event = value
                        elif field == "data":
                            data.append(value)
        except httpx.ConnectError as e:
            raise EngineUnavailable(f"no engine answers at {self.where} ({e})") from None
        except httpx.TransportError as e:
            raise EngineError(f"lost the event stream of job {job_id}: {e}") from None


def connect(
    cache_dir: str | os.PathLike = "cache",
    start: bool = True,
    socket_path: str | os.PathLike | None = None,
    wait_s: float = 60.0,
    args: list[str] = (),
) -> EngineClient:
    """A client of the engine serving `cache_dir`. With start=True and none running, start one
    detached (its own session: it outlives this process and the terminal) and wait until it
    answers /health. `args` are extra `engine.service.server` options for a started engine."""
    client = EngineClient(socket_path=socket_path, cache_dir=cache_dir)
    try:
        client.health()
        return client
    except EngineUnavailable:
        client.close()
        if not start:
            raise
    proc = daemon.start_detached(cache_dir, socket_path, list(args))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        client = EngineClient(socket_path=socket_path, cache_dir=cache_dir)
        try:
            client.health()
            return client
        except EngineUnavailable:
            client.close()
        if proc.poll() is not None and proc.returncode != 0:
            # It may have lost a race to another engine starting for the same cache: that one
            # will answer soon. Otherwise its log says why.
            if daemon.read_info(cache_dir) is None:
                time.sleep(0.5)
                if daemon.read_info(cache_dir) is None:
                    raise EngineError(f"the engine did not start: {_log_tail(cache_dir)}")
        time.sleep(0.1)
    raise EngineError(f"the engine did not answer within {wait_s:.0f} s: {_log_tail(cache_dir)}")


def _log_tail(cache_dir) -> str:
    try:
        lines = (daemon.run_dir(cache_dir) / "engine.log").read_text().strip().splitlines()
    except OSError:
        return "no engine log"
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or ["empty engine log"])[-1]
