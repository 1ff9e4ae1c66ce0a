"""The status bar: engine connection, running jobs, checkpoint."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static


class StatusBar(Static):
    """One line: checkpoint on the left, engine state and running jobs on the right."""

    DEFAULT_CSS = """
    StatusBar {
        dock: top;
        height: 1;
        background: $panel;
        color: $text;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.health: dict | None = None
        self.connected: bool | None = None  # None: not known yet
        self.checkpoint: dict | None = None
        self.running = 0
        self.queued = 0

    def update_state(
        self,
        *,
        health: dict | None = None,
        connected: bool | None = None,
        checkpoint: dict | None = None,
        running: int | None = None,
        queued: int | None = None,
    ) -> None:
        if health is not None:
            self.health = health
        if connected is not None:
            self.connected = connected
        if checkpoint is not None:
            self.checkpoint = checkpoint
        if running is not None:
            self.running = running
        if queued is not None:
            self.queued = queued
        self.refresh_text()

    def left_text(self) -> Text:
        t = Text(" dit-workbench ", style="bold")
        ck = self.checkpoint
        if ck:
            t.append("│ ", style="dim")
            t.append(str(ck.get("name", "?")), style="bold")
            info = [
                str(ck.get("preset", "")),
                f"{ck.get('layers', '?')}×{ck.get('heads', '?')}",
                str(ck.get("text", "")),
            ]
            t.append(" " + " ".join(i for i in info if i), style="dim")
        return t

    def right_text(self) -> Text:
        t = Text()
        if self.connected is None:
            t.append("○ connecting… ", style="dim")
            return t
        if not self.connected:
            t.append("✖ engine unreachable ", style="bold #D55E00")
            return t
        h = self.health or {}
        t.append("● ", style="#009E73")
        t.append(f"engine {h.get('version', '')} {h.get('state', '')}".rstrip())
        dev = h.get("device")
        if isinstance(dev, dict) and dev.get("device"):
            t.append(f" on {dev['device']}", style="bold" if dev["device"] != "cpu" else "")
        t.append(" │ ", style="dim")
        running = self.running
        if isinstance(h.get("jobs_running"), int):
            running = max(running, h["jobs_running"])
        if running:
            t.append(f"{running} running", style="bold #E69F00")
        else:
            t.append("no jobs running", style="dim")
        if self.queued:
            t.append(f", {self.queued} queued", style="#E69F00")
        t.append(" ")
        return t

    def refresh_text(self) -> None:
        grid = Table.grid(expand=True, padding=0)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(justify="right", no_wrap=True)
        grid.add_row(self.left_text(), self.right_text())
        self.update(grid)

    def on_mount(self) -> None:
        self.refresh_text()
