"""The checkpoints sidebar: a tree of checkpoints with the results each one's cache holds."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static, Tree

from engine.core.columns import RESULT_KINDS
from workbench.components.checkpoint_tree import CheckpointTree
from workbench.services.messages import CheckpointSelected


class CheckpointSidebar(Vertical):
    """Enter on a checkpoint switches every pane to it."""

    DEFAULT_CSS = """
    CheckpointSidebar {
        width: 28;
        dock: left;
        border-right: vkey $panel-lighten-2;
    }
    CheckpointSidebar > Tree { height: 1fr; }
    CheckpointSidebar > #ckpt-info { height: auto; max-height: 10; padding: 0 1; color: $text-muted; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.checkpoints: list[dict] = []
        self.current: str | None = None

    def compose(self) -> ComposeResult:
        tree: Tree[str] = CheckpointTree("checkpoints", id="ckpt-tree")
        tree.show_root = False
        tree.guide_depth = 2
        yield tree
        yield Static("", id="ckpt-info")

    def set_checkpoints(self, checkpoints: list[dict], current: str | None) -> None:
        self.checkpoints = checkpoints
        self.current = current
        tree = self.query_one(Tree)
        tree.clear()
        for ck in checkpoints:
            name = ck.get("name", "?")
            label = Text(
                ("● " if name == current else "  ") + name, style="bold" if name == current else ""
            )
            node = tree.root.add(label, data=name, expand=name == current)
            if ck.get("error"):
                node.add_leaf(Text(str(ck["error"])[:60], style="#D55E00"), data=name)
            results = ck.get("results")
            if not isinstance(results, dict):
                continue
            for kind in RESULT_KINDS:
                runs = results.get(kind) or []
                kid = node.add(
                    Text(f"{kind} ({len(runs)})", style="" if runs else "dim"), data=name
                )
                for run in runs[-20:]:
                    kid.add_leaf(str(run), data=name)
        self.show_info(current)

    def show_info(self, name: str | None) -> None:
        ck = next((c for c in self.checkpoints if c.get("name") == name), None)
        info = self.query_one("#ckpt-info", Static)
        if ck is None:
            info.update("")
            return
        if ck.get("error"):
            info.update(f"{ck.get('path', '')}\n{ck['error']}")
            return
        h = str(ck.get("hash", ""))[:12]
        lines = [
            f"{ck.get('preset', '?')} · {ck.get('layers', '?')} layers × {ck.get('heads', '?')} heads",
            f"text {ck.get('text', '?')} · {ck.get('codec', '?')} {ck.get('res', '?')}px",
            f"hash {h}",
            f"{ck.get('path', '')}",
        ]
        info.update("\n".join(lines))

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        event.stop()
        if event.node.data:
            self.show_info(event.node.data)

    def on_tree_node_selected(self, event: Tree.NodeSelected) -> None:
        event.stop()
        name = event.node.data
        if name and name != self.current:
            self.post_message(CheckpointSelected(name))
