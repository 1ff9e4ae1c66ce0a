"""Typed messages that widgets and the app's services post to the app (they bubble up the DOM)."""

from __future__ import annotations

from textual.message import Message

from engine.service.client import EngineAPI
from workbench.services.query import Query


class HealthUpdated(Message):
    """Result of a health poll: the record, or None with the error when unreachable."""

    def __init__(self, health: dict | None, error: str | None = None) -> None:
        super().__init__()
        self.health = health
        self.error = error


class JobsUpdated(Message):
    """Result of a jobs poll: every job, or None when the poll failed."""

    def __init__(self, jobs: list[dict] | None) -> None:
        super().__init__()
        self.jobs = jobs


class CheckpointsLoaded(Message):
    def __init__(self, checkpoints: list[dict]) -> None:
        super().__init__()
        self.checkpoints = checkpoints


class CheckpointSelected(Message):
    """The user picked a checkpoint (sidebar or command palette)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


class HeadSelected(Message):
    """The cursor moved to a head (table row or map cell); source names the component."""

    def __init__(self, layer: int, head: int, source: str, row: dict | None = None) -> None:
        super().__init__()
        self.layer = layer
        self.head = head
        self.source = source
        self.row = row


class OpenHeadDetail(Message):
    """Enter on a head: open its detail screen."""

    def __init__(self, layer: int, head: int, relation: str | None = None) -> None:
        super().__init__()
        self.layer = layer
        self.head = head
        self.relation = relation


class QueryChanged(Message):
    def __init__(self, query: Query) -> None:
        super().__init__()
        self.query = query


class StepChanged(Message):
    """The map pane moved to another denoising step ("all" = aggregated)."""

    def __init__(self, step: int | str) -> None:
        super().__init__()
        self.step = step


class JobSubmitted(Message):
    """The engine queued a job the user asked for."""

    def __init__(self, job: dict, what: str) -> None:
        super().__init__()
        self.job = job
        self.what = what


class JobCancelled(Message):
    """The engine took a cancel request for job `jid` (`job` is its record as it answered)."""

    def __init__(self, jid: int, job: dict) -> None:
        super().__init__()
        self.jid = jid
        self.job = job


class Reconnected(Message):
    """A reconnect gave a client (maybe the same one) to the engine."""

    def __init__(self, client: EngineAPI) -> None:
        super().__init__()
        self.client = client


class ReconnectFailed(Message):
    pass


class ExportDone(Message):
    def __init__(self, path: str, rows: int) -> None:
        super().__init__()
        self.path = path
        self.rows = rows
