"""The banner shown while the engine does not answer."""

from __future__ import annotations

from textual.widgets import Static


class Banner(Static):
    """Shown only while the engine is unreachable."""

    DEFAULT_CSS = """
    Banner {
        dock: top;
        height: auto;
        max-height: 2;
        background: #D55E00;
        color: black;
        text-style: bold;
        padding: 0 1;
        display: none;
    }
    Banner.-shown { display: block; }
    """

    def show_error(self, error: str, attempt: int) -> None:
        self.update(
            f"Engine unreachable ({error}). Reconnecting every few seconds, attempt {attempt}; "
            "tables show the last data received."
        )
        self.add_class("-shown")

    def hide(self) -> None:
        self.remove_class("-shown")

    @property
    def shown(self) -> bool:
        return self.has_class("-shown")
