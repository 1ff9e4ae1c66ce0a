"""The checkpoints as a tree: each one with the results the engine holds for it."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Tree


class CheckpointTree(Tree):
    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]
