"""The default screen and the panes it shows, in tab order (keys 1-6)."""

from __future__ import annotations

from textual.binding import Binding
from textual.screen import Screen

PANES: list[tuple[str, str]] = [
    ("heads", "Heads"),
    ("map", "Map"),
    ("screening", "Screening"),
    ("ablations", "Ablations"),
    ("jobs", "Jobs"),
    ("training", "Training"),
]


class MainScreen(Screen):
    """The default screen; tab / shift+tab switch panes here (dialogs keep normal focus keys)."""

    BINDINGS = [
        Binding("tab", "app.next_pane(1)", "Pane", show=True, key_display="tab"),
        Binding("shift+tab", "app.next_pane(-1)", "Previous pane", show=False),
    ]
