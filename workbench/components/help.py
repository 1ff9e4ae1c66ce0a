"""The `?` screen: every key, where it works, and what it does."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

# (keys as shown, where, what) - the single list the help screen shows; tests check that every
# binding of the app and its components appears here
KEY_HELP: list[tuple[str, str, str]] = [
    ("↑ ↓  j k", "tables, map", "move the cursor"),
    ("g  G", "tables, map", "first / last row (layer)"),
    ("pgup pgdn", "tables", "page up / down"),
    ("enter", "heads, map, screening", "open the head's detail (attention maps, samples)"),
    ("escape", "anywhere", "back / close dialog / clear the table's filter"),
    ("tab  shift+tab", "main", "next / previous pane"),
    ("1 … 6", "main", "Heads, Map, Screening, Ablations, Jobs, Training"),
    ("/", "tables", "filter the current table (engine-side)"),
    ("s", "tables", "sort the current table by a column"),
    ("S", "tables", "reverse the sort order"),
    ("a", "anywhere", "ablate the selected head (dialog, confirm submits a job)"),
    ("x", "anywhere", "screen the checkpoint's heads in weight space (confirm submits a job)"),
    ("e", "anywhere", "export the current table (all rows) to CSV in ./exports"),
    ("r", "anywhere", "refresh from the engine"),
    ("o", "heads", "edit the query (text → image category, steps, aggregation)"),
    ("b", "main", "show / hide the checkpoints sidebar"),
    ("← →", "map", "previous / next denoising step (all = aggregated)"),
    ("h  l", "map", "previous / next head"),
    ("m", "screening", "cycle the screening metric"),
    ("c", "jobs", "cancel the job under the cursor"),
    ("c  C", "head detail", "next / previous text category"),
    ("v  V", "head detail", "next / previous relation for the QK map"),
    ("[  ]", "head detail", "earlier / later denoising steps (as many as fit the width)"),
    ("[  ]", "ablations", "older / newer stored per-head sweep"),
    ("+  -", "head detail", "zoom the maps and images"),
    ("ctrl+s", "ablate dialog", "submit"),
    ("space", "ablate dialog", "toggle a token category"),
    ("?", "anywhere", "this help"),
    ("ctrl+p", "anywhere", "command palette (every action)"),
    ("q", "anywhere", "quit (jobs keep running; says how to stop the engine)"),
]


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90%; max-width: 100; height: 90%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    """

    BINDINGS = [
        Binding("escape,q,question_mark", "close", "Close"),
        Binding("j,down", "scroll(1)", show=False),
        Binding("k,up", "scroll(-1)", show=False),
    ]

    def compose(self) -> ComposeResult:
        t = Table(box=None, expand=True, show_header=True, header_style="bold", pad_edge=False)
        t.add_column("key", no_wrap=True, style="bold #E69F00")
        t.add_column("where", no_wrap=True, style="dim")
        t.add_column("what", ratio=1)
        for keys, where, what in KEY_HELP:
            t.add_row(keys, where, what)
        with VerticalScroll(id="help-scroll"):
            yield Static(Text("dit-workbench keys", style="bold"))
            yield Static(t, id="help-table")
            yield Static(
                Text(
                    "Filters: word · col=v · col>v · col<=v · col~text (terms ANDed). "
                    "Every action is also in the command palette (ctrl+p).",
                    style="dim",
                )
            )

    def action_close(self) -> None:
        self.dismiss(None)

    def action_scroll(self, d: int) -> None:
        self.query_one(VerticalScroll).scroll_relative(y=d, animate=False)
