"""The `a` dialog: ablate one head (intervention kind, tokens, steps, samples), then submit."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, SelectionList, Static
from textual.widgets.selection_list import Selection

from workbench.components.mono_list import MonoSelectionList
from workbench.components.query import TEXT_CATEGORIES, valid_steps

KINDS = [
    ("mask attention to tokens", "mask"),
    ("zero the head's output", "zero"),
]


class AblateDialog(ModalScreen[dict | None]):
    """Returns the job parameters for ``client.submit("ablate", ...)``, or None."""

    DEFAULT_CSS = """
    AblateDialog { align: center middle; }
    AblateDialog > Vertical {
        width: 64; height: auto; max-height: 100%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    AblateDialog .row { height: auto; }
    AblateDialog .row > Label { width: 9; color: $text-muted; }
    AblateDialog Select { width: 1fr; }
    AblateDialog SelectionList { height: auto; max-height: 7; width: 1fr; border: none; padding: 0; }
    AblateDialog Input { width: 1fr; }
    AblateDialog #ablate-error { color: #D55E00; height: auto; }
    AblateDialog #ablate-buttons { height: 1; align-horizontal: right; margin-top: 1; }
    AblateDialog Button { margin-left: 1; }
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Submit"),
    ]

    def __init__(
        self, checkpoint: str, layer: int, head: int, *, steps_hint: str = "all", samples: int = 64
    ) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.layer_idx = layer
        self.head_idx = head
        self.steps_hint = steps_hint
        self.samples = samples

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                f"[b]Ablate L{self.layer_idx}H{self.head_idx}[/b] on {self.checkpoint}",
                id="ablate-title",
            )
            with Horizontal(classes="row"):
                yield Label("kind")
                yield Select(KINDS, value="mask", allow_blank=False, compact=True, id="ablate-kind")
            with Horizontal(classes="row"):
                yield Label("tokens")
                yield MonoSelectionList(
                    *[Selection(c, c, c == "relation") for c in TEXT_CATEGORIES],
                    id="ablate-tokens",
                    compact=True,
                )
            with Horizontal(classes="row"):
                yield Label("steps")
                yield Input(
                    self.steps_hint,
                    placeholder="all, 0-3 or 0,4,8",
                    compact=True,
                    id="ablate-steps",
                )
            with Horizontal(classes="row"):
                yield Label("samples")
                yield Input(str(self.samples), type="integer", compact=True, id="ablate-samples")
            yield Static("", id="ablate-error")
            with Horizontal(id="ablate-buttons"):
                yield Button("Cancel", id="ablate-cancel", compact=True)
                yield Button("Submit", id="ablate-submit", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.query_one("#ablate-kind", Select).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        self.query_one("#ablate-tokens", SelectionList).disabled = event.value == "zero"

    def params(self) -> dict | str:
        """The job parameters, or an error message naming the problem."""
        kind = str(self.query_one("#ablate-kind", Select).value)
        tokens = list(self.query_one("#ablate-tokens", SelectionList).selected)
        steps = self.query_one("#ablate-steps", Input).value.strip() or "all"
        samples_s = self.query_one("#ablate-samples", Input).value.strip()
        if kind == "mask" and not tokens:
            return "choose at least one token category to mask (space toggles)"
        if not valid_steps(steps):
            return f"bad steps {steps!r}: use all, a range like 0-3 or a list like 0,4,8"
        try:
            samples = int(samples_s)
        except ValueError:
            return f"samples must be a whole number, not {samples_s!r}"
        if samples <= 0:
            return "samples must be at least 1"
        p: dict = {
            "checkpoint": self.checkpoint,
            "layer": self.layer_idx,
            "head": self.head_idx,
            "intervention": kind,
            "steps": steps,
            "samples": samples,
        }
        if kind == "mask":
            p["tokens"] = tokens
        return p

    def action_submit(self) -> None:
        p = self.params()
        if isinstance(p, str):
            self.query_one("#ablate-error", Static).update(p)
            return
        self.dismiss(p)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "ablate-submit":
            self.action_submit()
        else:
            self.action_cancel()
