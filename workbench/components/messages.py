"""Typed messages that components post to the app (they bubble up the DOM)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


class EngineFailed(Message):
    """An engine call failed; the app shows it as a notification (never a crash)."""

    def __init__(self, what: str, error: BaseException, *, quiet: bool = False) -> None:
        super().__init__()
        self.what = what
        self.error = error
        self.quiet = quiet

    @property
    def text(self) -> str:
        msg = str(self.error) or type(self.error).__name__
        return f"{self.what}: {msg}" if self.what else msg


class HealthUpdated(Message):
    """Result of a health poll: the record, or None with the error when unreachable."""

    def __init__(self, health: dict | None, error: str | None = None) -> None:
        super().__init__()
        self.health = health
        self.error = error


class JobsUpdated(Message):
    def __init__(self, jobs: list[dict]) -> None:
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


@dataclass(frozen=True)
class Query:
    """What the heads table ranks by: TEXT->IMAGE attention over steps, aggregated."""

    text: str = "relation"
    image: str = "object1"
    steps: str = ""  # "" = the engine's default (all sampled steps)
    agg: str = "max"
    correct_only: bool = False

    @property
    def name(self) -> str:
        return f"{self.text}->{self.image}"

    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"query": self.name, "agg": self.agg}
        if self.steps.strip():
            p["steps"] = self.steps.strip()
        if self.correct_only:
            p["correct_only"] = True
        return p


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
    def __init__(self, job: dict) -> None:
        super().__init__()
        self.job = job


class ExportDone(Message):
    def __init__(self, path: str, rows: int) -> None:
        super().__init__()
        self.path = path
        self.rows = rows
