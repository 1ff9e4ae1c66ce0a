"""What the heads table and the map rank by."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Query:
    """What the heads table ranks by: TEXT->IMAGE attention over steps, aggregated."""

    text: str = "relation"
    image: str = "object1"
    steps: str = ""  # "" = the engine's default (all sampled steps)
    agg: str = "max"
    correct_only: bool = False

    @property
    def name(self) -> str:
        return f"{self.text}->{self.image}"

    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"query": self.name, "agg": self.agg}
        if self.steps.strip():
            p["steps"] = self.steps.strip()
        if self.correct_only:
            p["correct_only"] = True
        return p
