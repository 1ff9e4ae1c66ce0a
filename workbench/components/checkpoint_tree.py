"""The checkpoints sidebar's tree: a Tree that also moves with j and k."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Tree


class CheckpointTree(Tree):
    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]
