"""The command palette (ctrl+p): every key's action by name, plus panes, checkpoints and queries."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from textual.app import SystemCommand
from textual.screen import Screen

from workbench.components.main import PANES
from workbench.components.messages import OpenHeadDetail, Query, QueryChanged

QUERY_PRESETS = [
    ("relation", "object1"),
    ("relation", "object2"),
    ("shape1", "object1"),
    ("shape2", "object2"),
    ("color1", "object1"),
    ("color2", "object2"),
    ("filler", "background"),
]


class PaletteCommands:
    """WorkbenchApp's palette entries (Textual's own system commands come first)."""

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        cmds: list[tuple[str, str, Callable[[], Any]]] = [
            ("Help: keys", "List every key (?)", self.action_help),
            ("Filter table", "Filter the current table (/)", self.action_filter),
            ("Clear filter", "Show every row of the current table", self._clear_filter),
            ("Sort table", "Sort the current table by a column (s)", self.action_sort),
            ("Reverse sort", "Reverse the current table's order (S)", self.action_reverse_sort),
            (
                "Ablate selected head",
                "Mask or zero the selected head; submits a job (a)",
                self.action_ablate,
            ),
            (
                "Screen checkpoint",
                "Weight-space screening of every head; submits a job (x)",
                self.action_screen_heads,
            ),
            ("Export table to CSV", "Write every row of the current table (e)", self.action_export),
            ("Refresh", "Reload everything from the engine (r)", self.action_refresh),
            (
                "Toggle sidebar",
                "Show or hide the checkpoints sidebar (b)",
                self.action_toggle_sidebar,
            ),
            (
                "Edit query",
                "Text category -> image category, steps, aggregation (o)",
                self.action_edit_query,
            ),
            (
                "Open head detail",
                "Attention maps and samples of the selected head (enter)",
                self._open_selected,
            ),
            (
                "Cancel job",
                "Cancel the job under the cursor in the Jobs pane (c)",
                self._cancel_job,
            ),
            ("Next pane", "Switch to the next pane (tab)", lambda: self.action_next_pane(1)),
            (
                "Previous pane",
                "Switch to the previous pane (shift+tab)",
                lambda: self.action_next_pane(-1),
            ),
        ]
        for i, (pid, title) in enumerate(PANES):
            cmds.append(
                (
                    f"Pane: {title}",
                    f"Show the {title} pane ({i + 1})",
                    lambda pid=pid: self.action_pane(pid),
                )
            )
        for c in self.checkpoints:
            n = c.get("name", "?")
            cmds.append(
                (
                    f"Checkpoint: {n}",
                    f"Switch every pane to {n}",
                    lambda n=n: self.switch_checkpoint(n),
                )
            )
        for text, image in QUERY_PRESETS:
            cmds.append(
                (
                    f"Query: {text}->{image}",
                    "Rank heads by this attention",
                    lambda t=text, im=image: self._set_query(t, im),
                )
            )
        for title, help_text, cb in cmds:
            yield SystemCommand(title, help_text, cb)

    def _clear_filter(self) -> None:
        t = self.active_pane.current_table()
        if t is not None:
            t.set_filter(None)

    def _open_selected(self) -> None:
        hd = self.selected_head()
        if hd is not None:
            self.post_message(OpenHeadDetail(*hd))

    def _cancel_job(self) -> None:
        self.action_pane("jobs")
        self.call_after_refresh(self.jobs_pane.action_cancel_job)

    def _set_query(self, text: str, image: str) -> None:
        q = Query(
            text, image, self.query_value.steps, self.query_value.agg, self.query_value.correct_only
        )
        self.post_message(QueryChanged(q))
        self.action_pane("heads")
