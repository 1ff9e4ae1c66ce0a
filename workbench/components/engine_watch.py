"""What the app knows of the engine: its health (and reconnecting when it goes away), the jobs
(with a notification when one ends) and the checkpoints, each polled in a worker."""

from __future__ import annotations

import time
from typing import Any

from workbench.components.jobs import ACTIVE, JobsPane
from workbench.components.messages import (
    CheckpointSelected,
    EngineFailed,
    HealthUpdated,
    JobsUpdated,
)
from workbench.components.sidebar import CheckpointSidebar
from workbench.components.status import Banner, StatusBar


class EngineWatch:
    """WorkbenchApp's engine state: `health`, `connected`, `jobs`, `checkpoints`, `checkpoint`."""

    def poll_health(self) -> None:
        if self._polling_health:
            return
        self._polling_health = True

        def fetch(client: Any) -> dict:
            return client.health()

        def done(h: dict) -> None:
            self._polling_health = False
            self.post_message(HealthUpdated(h))

        def failed(exc: BaseException) -> None:
            self._polling_health = False
            self.post_message(HealthUpdated(None, str(exc) or type(exc).__name__))

        self.engine_call("health", fetch, done, group="health", quiet=True, on_error=failed)

    def on_health_updated(self, event: HealthUpdated) -> None:
        if self._exit or self._closing:
            return
        status = self.query_one(StatusBar)
        banner = self.query_one(Banner)
        if event.health is not None:
            was = self.connected
            self.connected, self.health, self.attempts = True, event.health, 0
            status.update_state(health=event.health, connected=True)
            if banner.shown:
                banner.hide()
            if was is False:
                self.notify("engine reconnected", title="engine")
                self.action_refresh()
            return
        self.attempts += 1
        self.connected = False
        status.update_state(connected=False)
        banner.show_error(event.error or "no answer", self.attempts)
        if self.reconnect_factory is not None:
            self._try_reconnect()

    def _try_reconnect(self) -> None:
        if self._reconnecting:
            return  # one attempt at a time (starting an engine can take a while)
        self._reconnecting = True
        factory = self.reconnect_factory

        def run(_old: Any) -> Any:
            return factory()  # type: ignore[misc]

        def failed(_exc: BaseException) -> None:
            self._reconnecting = False

        def done(new_client: Any) -> None:
            self._reconnecting = False
            old, self.client = self.client, new_client
            if old is not new_client:
                try:
                    old.close()
                except Exception:
                    pass
            self.poll_health()

        self.engine_call("reconnect", run, done, group="reconnect", quiet=True, on_error=failed)

    def poll_jobs(self) -> None:
        if self._polling_jobs:
            return
        self._polling_jobs = True

        def done(jobs: list[dict]) -> None:
            self._polling_jobs = False
            self.post_message(JobsUpdated(jobs))

        def failed(_exc: BaseException) -> None:
            self._polling_jobs = False

        self.engine_call(
            "jobs", lambda c: c.jobs(), done, group="jobs", quiet=True, on_error=failed
        )

    def on_jobs_updated(self, event: JobsUpdated) -> None:
        if self._exit or self._closing:
            return
        jobs = list(event.jobs or [])
        self.jobs = jobs
        running = sum(1 for j in jobs if j.get("state") == "running")
        queued = sum(1 for j in jobs if j.get("state") == "queued")
        self.query_one(StatusBar).update_state(running=running, queued=queued)
        self.jobs_pane.set_jobs(jobs)
        first = not self._job_states
        for j in jobs:
            jid, state = j.get("id"), j.get("state")
            before = self._job_states.get(jid)
            self._job_states[jid] = state
            if first or before == state or before not in ACTIVE:
                continue
            if state in ACTIVE:
                continue
            self._job_finished(j)

    def _job_finished(self, job: dict) -> None:
        kind, state, jid = job.get("kind"), job.get("state"), job.get("id")
        if state == "done":
            self.notify(f"job {jid} {kind} done", title="jobs")
        elif state == "failed":
            self.notify(
                f"job {jid} {kind} failed: {job.get('error') or 'see its log'}",
                severity="error",
                title="jobs",
            )
            return
        else:
            self.notify(f"job {jid} {kind} {state}", severity="warning", title="jobs")
            return
        if kind == "ablate":
            self.heads_pane.refresh_rows()
            self.pane("ablations").invalidate()
        elif kind == "screen":
            self.heads_pane.refresh_rows()
            self.pane("screening").invalidate()
        elif kind == "synopsis":
            self.heads_pane.refresh_rows()
            self.map_pane.invalidate()
        elif kind in ("train", "evaluate"):
            self.pane("training").invalidate()
        self.load_checkpoints()

    def load_checkpoints(self) -> None:
        def done(cks: list[dict]) -> None:
            self.set_checkpoints(list(cks or []))

        self.engine_call("checkpoints", lambda c: c.checkpoints(), done, group="checkpoints")

    def set_checkpoints(self, cks: list[dict]) -> None:
        self.checkpoints = cks
        if not cks and self.checkpoint is None:
            self.notify(
                "the engine knows no checkpoints: train one (dit-workbench train) or check its cache folder",
                severity="warning",
                title="checkpoints",
            )
        names = [c.get("name") for c in cks]
        want = self.checkpoint["name"] if self.checkpoint else self.initial_checkpoint
        if want not in names:
            if want and self.checkpoint is None and self.initial_checkpoint:
                self.notify(
                    f"no checkpoint {want!r}; showing {names[0] if names else 'none'}",
                    severity="warning",
                )
            want = names[0] if names else None
        ck = next((c for c in cks if c.get("name") == want), None)
        self._set_checkpoint(ck)

    def _set_checkpoint(self, ck: dict | None) -> None:
        changed = (self.checkpoint or {}).get("name") != (ck or {}).get("name")
        self.checkpoint = ck
        self.query_one(StatusBar).update_state(checkpoint=ck or {})
        self.query_one(CheckpointSidebar).set_checkpoints(
            self.checkpoints, ck["name"] if ck else None
        )
        if changed:
            self.selected = None
        for p in self.panes:
            if isinstance(p, JobsPane):
                continue
            if changed:
                p.set_checkpoint(ck)
            else:  # same checkpoint, fresher record: callers invalidate what changed
                p.checkpoint = ck

    def on_checkpoint_selected(self, event: CheckpointSelected) -> None:
        self.switch_checkpoint(event.name)

    def switch_checkpoint(self, name: str) -> None:
        ck = next((c for c in self.checkpoints if c.get("name") == name), None)
        if ck is None:
            self.notify(f"no checkpoint {name!r}", severity="error")
            return
        self._set_checkpoint(ck)
        self.notify(f"checkpoint {name}", title="checkpoint")

    def on_engine_failed(self, event: EngineFailed) -> None:
        if event.quiet or self.connected is False:
            return
        now = time.monotonic()
        text = event.text
        if now - self._recent_errors.get(text, -1e9) < 5.0:
            return
        self._recent_errors[text] = now
        self.notify(text, severity="error", title="engine", timeout=6)
