"""The command palette (ctrl+p): every key's action by name, plus panes, checkpoints and queries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from workbench.components.main import PANES

QUERY_PRESETS = [
    ("relation", "object1"),
    ("relation", "object2"),
    ("shape1", "object1"),
    ("shape2", "object2"),
    ("color1", "object1"),
    ("color2", "object2"),
    ("filler", "background"),
]


class PaletteActions(Protocol):
    """What the palette's entries run: the app's actions."""

    def action_help(self) -> None: ...
    def action_filter(self) -> None: ...
    def action_clear_filter(self) -> None: ...
    def action_sort(self) -> None: ...
    def action_reverse_sort(self) -> None: ...
    def action_ablate(self) -> None: ...
    def action_screen_heads(self) -> None: ...
    def action_export(self) -> None: ...
    def action_refresh(self) -> None: ...
    def action_toggle_sidebar(self) -> None: ...
    def action_edit_query(self) -> None: ...
    def action_open_selected(self) -> None: ...
    def action_cancel_job(self) -> None: ...
    def action_next_pane(self, delta: int = 1) -> None: ...
    def action_pane(self, pid: str) -> None: ...
    def switch_checkpoint(self, name: str) -> None: ...
    def action_set_query(self, text: str, image: str) -> None: ...


def palette_commands(
    app: PaletteActions, checkpoints: list[str]
) -> list[tuple[str, str, Callable[[], Any]]]:
    """(title, help, callback) for every palette entry of the workbench."""
    cmds: list[tuple[str, str, Callable[[], Any]]] = [
        ("Help: keys", "List every key (?)", app.action_help),
        ("Filter table", "Filter the current table (/)", app.action_filter),
        ("Clear filter", "Show every row of the current table", app.action_clear_filter),
        ("Sort table", "Sort the current table by a column (s)", app.action_sort),
        ("Reverse sort", "Reverse the current table's order (S)", app.action_reverse_sort),
        (
            "Ablate selected head",
            "Mask or zero the selected head; submits a job (a)",
            app.action_ablate,
        ),
        (
            "Screen checkpoint",
            "Weight-space screening of every head; submits a job (x)",
            app.action_screen_heads,
        ),
        ("Export table to CSV", "Write every row of the current table (e)", app.action_export),
        ("Refresh", "Reload everything from the engine (r)", app.action_refresh),
        (
            "Toggle sidebar",
            "Show or hide the checkpoints sidebar (b)",
            app.action_toggle_sidebar,
        ),
        (
            "Edit query",
            "Text category -> image category, steps, aggregation (o)",
            app.action_edit_query,
        ),
        (
            "Open head detail",
            "Attention maps and samples of the selected head (enter)",
            app.action_open_selected,
        ),
        (
            "Cancel job",
            "Cancel the job under the cursor in the Jobs pane (c)",
            app.action_cancel_job,
        ),
        ("Next pane", "Switch to the next pane (tab)", lambda: app.action_next_pane(1)),
        (
            "Previous pane",
            "Switch to the previous pane (shift+tab)",
            lambda: app.action_next_pane(-1),
        ),
    ]
    for i, (pid, title) in enumerate(PANES):
        cmds.append(
            (
                f"Pane: {title}",
                f"Show the {title} pane ({i + 1})",
                lambda pid=pid: app.action_pane(pid),
            )
        )
    for n in checkpoints:
        cmds.append(
            (
                f"Checkpoint: {n}",
                f"Switch every pane to {n}",
                lambda n=n: app.switch_checkpoint(n),
            )
        )
    for text, image in QUERY_PRESETS:
        cmds.append(
            (
                f"Query: {text}->{image}",
                "Rank heads by this attention",
                lambda t=text, im=image: app.action_set_query(t, im),
            )
        )
    return cmds
