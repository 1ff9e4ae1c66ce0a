"""Head detail (enter on a head): 8x8 attention maps per step on stored samples, the samples
themselves drawn with half-block cells, and the head's screening QK map beside the reference ramp.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import ScrollableContainer
from textual.screen import Screen
from textual.widgets import Footer, Static

from engine.data.relations import RELATIONS
from engine.text.categories import CATEGORIES as TEXT_CATEGORIES
from workbench.components.canvas import Canvas
from workbench.render.draw import (
    halfblock_image,
    hstack,
    legend,
    legend_strip,
    value_range,
)
from workbench.render.maps import ZOOM_FACTORS, cosine, draw_map
from workbench.services.engine import TableRows, answer, engine_of
from workbench.services.export import ExportSource


class HeadDetailScreen(Screen):
    """One head in depth. escape goes back."""

    DEFAULT_CSS = """
    HeadDetailScreen > #detail-title { height: 1; background: $panel; padding: 0 1; }
    HeadDetailScreen > #detail-scroll { height: 1fr; overflow-x: hidden; }
    HeadDetailScreen #detail-screen-maps { margin: 0 1; }
    HeadDetailScreen #detail-grid { margin: 0 1; }
    """

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("c", "category(1)", "Category", show=False),
        Binding("C", "category(-1)", "Prev category", show=False),
        Binding("v", "relation(1)", "Relation", show=False),
        Binding("V", "relation(-1)", "Prev relation", show=False),
        Binding("right_square_bracket", "step_page(1)", "Later steps", show=False),
        Binding("left_square_bracket", "step_page(-1)", "Earlier steps", show=False),
        Binding("plus,equals_sign", "zoom(1)", "Zoom in", show=False),
        Binding("minus", "zoom(-1)", "Zoom out", show=False),
    ]

    class DetailLoaded(TableRows):
        """The head's attention maps per sample and step."""

    class ImagesLoaded(TableRows):
        """The checkpoint's sample images and prompts."""

    class ScreenMapLoaded(TableRows):
        """The head's weight-space maps for the relation."""

    def __init__(
        self,
        checkpoint: dict,
        layer: int,
        head: int,
        *,
        relation: str | None = None,
        category: str = "relation",
        zoom: int = 2,
    ) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.layer_idx = layer
        self.head_idx = head
        self.relation = relation if relation in RELATIONS else "above"
        self.category = category if category in TEXT_CATEGORIES else "relation"
        self.zoom = zoom
        self.step_page = 0  # which page of denoising steps is shown (as many as fit the width)
        self.detail: tuple[list[str], list[list]] | None = None
        self.images: dict[int, list] = {}
        self.prompts: dict[int, str] = {}
        self.screen_maps: dict[str, list] = {}
        self.errors: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Static("", id="detail-title")
        with ScrollableContainer(id="detail-scroll"):
            yield Canvas(id="detail-screen-maps")
            yield Canvas(id="detail-grid")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#detail-scroll").focus()
        self._title()
        self.load_images()
        self.load_detail()
        self.load_screen_map()

    @property
    def ckpt_name(self) -> str:
        return str(self.checkpoint.get("name"))

    # ----------------------------------------------------------------- loading
    def load_detail(self) -> None:
        params = self.detail_params()
        self.detail = None
        self.errors.pop("detail", None)
        self._draw()

        engine_of(self).fetch_rows(
            self, "head detail", "head_detail", params, self.DetailLoaded, group="detail"
        )

    @answer
    def on_head_detail_screen_detail_loaded(self, event: DetailLoaded) -> None:
        if event.rows is None:
            self.errors["detail"] = str(event.error)
            self._draw()
        elif event.params == self.detail_params():
            self.detail = event.rows
            self._draw()

    def load_images(self) -> None:
        engine_of(self).fetch_rows(
            self,
            "sample images",
            "sample_images",
            {"checkpoint": self.ckpt_name},
            self.ImagesLoaded,
            group="images",
            quiet=True,
        )

    @answer
    def on_head_detail_screen_images_loaded(self, event: ImagesLoaded) -> None:
        if event.rows is None:
            self.errors["images"] = str(event.error)
            self._draw()
            return
        cols, rows = event.rows
        try:
            si, pi, ii = cols.index("sample"), cols.index("prompt"), cols.index("image")
        except ValueError:
            self.errors["images"] = f"sample_images has columns {cols}"
            return
        self.images = {r[si]: r[ii] for r in rows}
        self.prompts.update({r[si]: r[pi] for r in rows})
        self._draw()

    def screen_params(self) -> dict[str, Any]:
        return {
            "checkpoint": self.ckpt_name,
            "layer": self.layer_idx,
            "head": self.head_idx,
            "relation": self.relation,
        }

    def load_screen_map(self) -> None:
        params = self.screen_params()
        self.screen_maps = {}
        self.errors.pop("screen", None)

        engine_of(self).fetch_rows(
            self,
            "screening map",
            "screen_map",
            params,
            self.ScreenMapLoaded,
            group="screen",
            quiet=True,
        )

    @answer
    def on_head_detail_screen_screen_map_loaded(self, event: ScreenMapLoaded) -> None:
        if event.rows is None:
            self.errors["screen"] = str(event.error)
            self._draw()
            return
        if event.params != self.screen_params():
            return
        cols, rows = event.rows
        try:
            ki, mi = cols.index("kind"), cols.index("map")
        except ValueError:
            self.errors["screen"] = f"screen_map has columns {cols}"
            return
        self.screen_maps = {r[ki]: r[mi] for r in rows}
        self._draw()

    def detail_params(self) -> dict[str, Any]:
        return {
            "checkpoint": self.ckpt_name,
            "layer": self.layer_idx,
            "head": self.head_idx,
            "category": self.category,
        }

    def export_source(self) -> ExportSource:
        return ExportSource(
            "head_detail",
            params=self.detail_params(),
            stem=f"head_detail-L{self.layer_idx}H{self.head_idx}-{self.category}",
        )

    # ----------------------------------------------------------------- drawing
    def _title(self) -> None:
        t = Text()
        t.append(f"L{self.layer_idx}H{self.head_idx}", style="bold")
        tail = Text(" · text ")
        tail.append(self.category, style="bold")
        tail.append(" (c) · QK ")
        tail.append(self.relation, style="bold")
        tail.append(" (v)")
        room = max(self.app.size.width - 2 - len(t) - len(tail) - 3, 4)
        name = self.ckpt_name
        if len(name) > room:
            name = name[: room - 1] + "…"
        t.append(f" · {name}")
        t.append_text(tail)
        self.query_one("#detail-title", Static).update(t)

    def steps_per_page(self, w: int) -> int:
        """How many step maps fit beside the sample image (blocks w wide, 2 apart)."""
        avail = max(self.app.size.width - 4, w)
        return max(1, (avail - w) // (w + 2))

    def _draw(self) -> None:
        if not self.is_mounted:
            return
        self._title()
        f = ZOOM_FACTORS[self.zoom]
        # screening: QK map beside the reference ramp
        top = self.query_one("#detail-screen-maps", Canvas)
        if "screen" in self.errors:
            top.set_lines([Text(f"screening: {self.errors['screen']}", style="dim")])
        elif self.screen_maps:
            qk, ref = self.screen_maps.get("qk"), self.screen_maps.get("reference")
            blocks, labels = [], []
            for label, m in (("QK map", qk), (f"ramp “{self.relation}”", ref)):
                if m:
                    lo, hi = value_range([m])
                    blocks.append(draw_map(m, lo, hi, f))
                    labels.append(label)
            w = 8 * f
            head = Text("  ".join(lb[:w].ljust(w) for lb in labels), style="bold")
            cos = cosine(qk, ref) if qk and ref else None
            cap = Text("weight-space screening", style="bold underline")
            if cos is not None:
                cap.append(f" r = {cos:+.3f}", style="bold")
            cap.append(" · each map: low ", style="dim")
            cap.append_text(legend_strip(8))
            cap.append(" high", style="dim")
            top.set_lines([cap, head, *hstack(blocks, gap=2, widths=[w] * len(blocks))])
        else:
            top.set_lines([Text("screening: loading…", style="dim")])
        # per-sample grid: image, then the map at each step
        grid = self.query_one("#detail-grid", Canvas)
        if "detail" in self.errors:
            grid.set_lines([Text(f"⚠ {self.errors['detail']}", style="#D55E00")])
            return
        if self.detail is None:
            grid.set_lines([Text("attention maps: loading…", style="dim")])
            return
        cols, rows = self.detail
        try:
            si, pi, ti, mi = (cols.index(c) for c in ("sample", "prompt", "step", "map"))
        except ValueError:
            grid.set_lines([Text(f"head_detail has columns {cols}")])
            return
        by_sample: dict[Any, dict[int, list]] = {}
        for r in rows:
            by_sample.setdefault(r[si], {})[r[ti]] = r[mi]
            self.prompts.setdefault(r[si], r[pi])
        lo, hi = value_range([m for s in by_sample.values() for m in s.values()])
        w = 8 * f
        all_steps = sorted({t for s in by_sample.values() for t in s})
        per = self.steps_per_page(w)
        pages = max(1, -(-len(all_steps) // per))
        self.step_page = min(max(self.step_page, 0), pages - 1)
        shown = all_steps[self.step_page * per : (self.step_page + 1) * per]
        cap = Text(f"attention to “{self.category}”", style="bold underline")
        if pages > 1 and shown:
            cap.append(f" · t{shown[0]}–t{shown[-1]} of {len(all_steps)} steps ([ ])", style="bold")
        cap.append(" · ")
        cap.append_text(legend(lo, hi, 8))
        lines: list[Text] = [cap]
        for sample in sorted(by_sample, key=str):
            steps = by_sample[sample]
            lines.append(Text(f"sample {sample}: {self.prompts.get(sample, '')}", style="bold"))
            order = [t for t in shown if t in steps]
            labels = ["image"] + [f"t{s}" for s in order]
            lines.append(Text("  ".join(lb[:w].ljust(w) for lb in labels), style="dim"))
            img = self.images.get(sample)
            blocks = [
                halfblock_image(img, width=w) if img else [Text("(no image)".ljust(w), style="dim")]
            ]
            blocks += [draw_map(steps[s], lo, hi, f) for s in order]
            lines.extend(hstack(blocks, gap=2, widths=[w] * len(blocks)))
        grid.set_lines(lines)

    # ----------------------------------------------------------------- keys
    def action_back(self) -> None:
        self.app.pop_screen()

    def action_category(self, delta: int) -> None:
        i = TEXT_CATEGORIES.index(self.category)
        self.category = TEXT_CATEGORIES[(i + delta) % len(TEXT_CATEGORIES)]
        self.load_detail()

    def action_relation(self, delta: int) -> None:
        i = RELATIONS.index(self.relation)
        self.relation = RELATIONS[(i + delta) % len(RELATIONS)]
        self.load_screen_map()
        self._draw()

    def action_step_page(self, delta: int) -> None:
        self.step_page += delta  # clamped to the pages there are when drawn
        self.step_page = max(self.step_page, 0)
        self._draw()

    def action_zoom(self, delta: int) -> None:
        self.zoom = min(3, max(1, self.zoom + delta))
        self._draw()

    def selected_head(self) -> tuple[int, int]:
        return self.layer_idx, self.head_idx
