"""The query picker: text category -> image category, steps, aggregation, correct-only."""

from __future__ import annotations

import re

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Checkbox, Input, Label, Select

from engine.core.columns import IMAGE_CATEGORIES
from engine.text.categories import CATEGORIES as TEXT_CATEGORIES
from workbench.components.mono_checkbox import MonoCheckbox
from workbench.services.messages import QueryChanged
from workbench.services.query import Query

STEPS_RE = re.compile(r"^\s*(all|\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*)\s*$")


def valid_steps(text: str) -> bool:
    return not text.strip() or bool(STEPS_RE.match(text))


class QueryBar(Horizontal):
    """One line of compact controls; any change posts :class:`QueryChanged`."""

    class Leave(Message):
        """Escape in the query bar: give focus back to the table."""

    DEFAULT_CSS = """
    QueryBar { height: 1; width: 1fr; }
    QueryBar Label { padding: 0 1 0 0; color: $text-muted; }
    QueryBar #q-text { width: 13; }
    QueryBar #q-image { width: 14; }
    QueryBar #q-steps { width: 9; margin: 0 1 0 0; }
    QueryBar #q-agg { width: 9; }
    QueryBar Checkbox { width: auto; margin: 0 0 0 1; }
    """

    BINDINGS = [
        Binding("tab", "move(1)", "Next control", show=False),
        Binding("shift+tab", "move(-1)", "Previous control", show=False),
        Binding("escape", "leave", "Back to table", show=False),
    ]

    def __init__(self, query: Query | None = None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.query_value = query or Query()

    def compose(self) -> ComposeResult:
        q = self.query_value
        yield Label("query")
        yield Select(
            [(c, c) for c in TEXT_CATEGORIES],
            value=q.text,
            allow_blank=False,
            compact=True,
            id="q-text",
        )
        yield Label("→")
        yield Select(
            [(c, c) for c in IMAGE_CATEGORIES],
            value=q.image,
            allow_blank=False,
            compact=True,
            id="q-image",
        )
        yield Label("steps")
        yield Input(q.steps, placeholder="all", compact=True, id="q-steps")
        yield Select(
            [("max", "max"), ("mean", "mean")],
            value=q.agg,
            allow_blank=False,
            compact=True,
            id="q-agg",
        )
        yield MonoCheckbox("correct only", q.correct_only, compact=True, id="q-correct")

    def _read(self) -> Query | None:
        steps = self.query_one("#q-steps", Input).value
        if not valid_steps(steps):
            self.notify(
                f"bad steps {steps!r}: use 'all', a range like 0-13 or a list like 0,4,8",
                severity="error",
                title="query",
            )
            return None
        return Query(
            text=str(self.query_one("#q-text", Select).value),
            image=str(self.query_one("#q-image", Select).value),
            steps=steps.strip() if steps.strip() != "all" else "",
            agg=str(self.query_one("#q-agg", Select).value),
            correct_only=self.query_one("#q-correct", Checkbox).value,
        )

    def _changed(self) -> None:
        q = self._read()
        if q is not None and q != self.query_value:
            self.query_value = q
            self.post_message(QueryChanged(q))

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self._changed()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        self._changed()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._changed()

    def on_descendant_blur(self, event) -> None:
        if isinstance(event.widget, Input):
            self._changed()

    def set_query(self, q: Query) -> None:
        """Show q without posting a change (used by the command palette presets)."""
        self.query_value = q
        with self.prevent(Select.Changed, Checkbox.Changed):
            self.query_one("#q-text", Select).value = q.text
            self.query_one("#q-image", Select).value = q.image
            self.query_one("#q-agg", Select).value = q.agg
            self.query_one("#q-correct", Checkbox).value = q.correct_only
        self.query_one("#q-steps", Input).value = q.steps

    def action_move(self, delta: int) -> None:
        controls = [w for w in self.query("Select, Input, Checkbox") if w.focusable]
        if not controls:
            return
        focused = self.screen.focused
        i = controls.index(focused) if focused in controls else -1
        controls[(i + delta) % len(controls)].focus()

    def action_leave(self) -> None:
        self.post_message(QueryBar.Leave())

    def focus_first(self) -> None:
        self.query_one("#q-text", Select).focus()
