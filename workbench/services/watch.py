"""What the app knows of the engine: its health (and reconnecting when it goes away), the jobs
(noticing when one ends) and the checkpoints. Each poll runs in a worker of the app and comes
back to it as a message; the app hands the message here and shows what changed."""

from __future__ import annotations

import time

from textual.app import App
from textual.notifications import SeverityLevel

from engine.service.client import EngineAPI
from workbench.services.engine import Engine, EngineCallFailed
from workbench.services.messages import (
    CheckpointsLoaded,
    HealthUpdated,
    JobsUpdated,
    Reconnected,
    ReconnectFailed,
)

ACTIVE = ("queued", "running")  # job states that can still change


def job_note(job: dict) -> tuple[str, SeverityLevel]:
    """What to tell the user of a job that ended, and how loudly."""
    kind, state, jid = job.get("kind"), job.get("state"), job.get("id")
    if state == "done":
        return f"job {jid} {kind} done", "information"
    if state == "failed":
        return f"job {jid} {kind} failed: {job.get('error') or 'see its log'}", "error"
    return f"job {jid} {kind} {state}", "warning"


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class EngineWatch:
    """The engine's state as last seen: `health`, `connected`, `attempts`, `jobs`, `checkpoints`.

    One poll of each kind at a time; a newer one is not started while the last is out."""

    def __init__(self, app: App[None], engine: Engine) -> None:
        self.app = app
        self.engine = engine
        self.connected: bool | None = None
        self.health: dict | None = None
        self.attempts = 0
        self.jobs: list[dict] = []
        self.checkpoints: list[dict] = []
        self._job_states: dict[object, str | None] = {}
        self._polling_health = False
        self._polling_jobs = False
        self._reconnecting = False
        self._recent_errors: dict[str, float] = {}

    # ----------------------------------------------------------------- health
    def poll_health(self) -> None:
        if self._polling_health:
            return
        self._polling_health = True
        self.engine.call(
            self.app,
            "health",
            lambda c: c.health(),
            HealthUpdated,
            failed=lambda exc: HealthUpdated(None, _why(exc)),
            group="health",
            quiet=True,
        )

    def health_arrived(self, event: HealthUpdated) -> bool:
        """Take a health answer; True when it is the engine coming back after a failure."""
        self._polling_health = False
        if event.health is not None:
            was = self.connected
            self.connected, self.health, self.attempts = True, event.health, 0
            return was is False
        self.attempts += 1
        self.connected = False
        return False

    def try_reconnect(self) -> None:
        factory = self.engine.reconnect
        if factory is None or self._reconnecting:
            return  # one attempt at a time (starting an engine can take a while)
        self._reconnecting = True
        self.engine.call(
            self.app,
            "reconnect",
            lambda _old: factory(),
            Reconnected,
            failed=lambda _exc: ReconnectFailed(),
            group="reconnect",
            quiet=True,
        )

    def reconnected(self, new_client: EngineAPI | None) -> None:
        """Use the client a reconnect gave (None: the attempt failed; the next poll tries again)."""
        self._reconnecting = False
        if new_client is None:
            return
        old, self.engine.client = self.engine.client, new_client
        if old is not new_client:
            try:
                old.close()
            except Exception:
                pass
        self.poll_health()

    # ----------------------------------------------------------------- jobs
    def poll_jobs(self) -> None:
        if self._polling_jobs:
            return
        self._polling_jobs = True
        self.engine.call(
            self.app,
            "jobs",
            lambda c: c.jobs(),
            JobsUpdated,
            failed=lambda _exc: JobsUpdated(None),
            group="jobs",
            quiet=True,
        )

    def jobs_arrived(self, event: JobsUpdated) -> list[dict]:
        """Take a jobs answer; the jobs that ended since the last one (none on the first)."""
        self._polling_jobs = False
        if event.jobs is None:
            return []
        self.jobs = list(event.jobs)
        first = not self._job_states
        ended = []
        for j in self.jobs:
            jid, state = j.get("id"), j.get("state")
            before = self._job_states.get(jid)
            self._job_states[jid] = state
            if not first and before != state and before in ACTIVE and state not in ACTIVE:
                ended.append(j)
        return ended

    def count(self, state: str) -> int:
        return sum(1 for j in self.jobs if j.get("state") == state)

    # ----------------------------------------------------------------- checkpoints
    def load_checkpoints(self) -> None:
        self.engine.call(
            self.app,
            "checkpoints",
            lambda c: c.checkpoints(),
            lambda cks: CheckpointsLoaded(list(cks or [])),
            group="checkpoints",
        )

    def checkpoints_arrived(
        self, event: CheckpointsLoaded, current: str | None, initial: str | None
    ) -> tuple[dict | None, list[tuple[str, str]]]:
        """Take the checkpoints; the one to show (the current, else the one asked for at start,
        else the first) and warnings for the user as (text, title)."""
        self.checkpoints = cks = event.checkpoints
        warnings = []
        if not cks and current is None:
            warnings.append(
                (
                    "the engine knows no checkpoints: train one (dit-workbench train) "
                    "or check its cache folder",
                    "checkpoints",
                )
            )
        names = [c.get("name") for c in cks]
        want = current or initial
        if want not in names:
            if want and current is None:
                showing = names[0] if names else "none"
                warnings.append((f"no checkpoint {want!r}; showing {showing}", ""))
            want = names[0] if names else None
        return self.find(want), warnings

    def find(self, name: str | None) -> dict | None:
        return next((c for c in self.checkpoints if c.get("name") == name), None)

    # ----------------------------------------------------------------- errors
    def worth_showing(self, event: EngineCallFailed) -> bool:
        """A failure the user should see: not a background poll's, not while the engine is
        away (the banner says so), not the same text again within 5 s."""
        if event.quiet or self.connected is False:
            return False
        now = time.monotonic()
        if now - self._recent_errors.get(event.text, -1e9) < 5.0:
            return False
        self._recent_errors[event.text] = now
        return True
