"""The interventions the spec parser knows: one line each, kind -> form and implementing class.

Adding an intervention is one module (a frozen `Intervention` dataclass with `kind` and a
`from_args(positional, options, spec)` classmethod) plus one line here. The table is torch-free
and names each class as a "module:Class" string, imported on first parse: the engine refuses a
bad spec (`spec.precheck`) without loading torch, and the intervention modules, which use the
parser's helpers (engine.intervene.spec), are not imported back by it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class InterventionKind:
    form: str  # the usage line shown in errors and help; its first word is the kind's name
    target: str  # "module:Class" of the Intervention subclass
    head: bool = False  # its one positional argument is a LAYER.HEAD

    @property
    def name(self) -> str:
        return self.form.split()[0]

    def load(self) -> type:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


_KINDS: tuple[InterventionKind, ...] = (
    InterventionKind(
        "mask-head L.H [tokens=relation] [steps=0-13] [branch=cond|uncond|both]",
        "engine.intervene.heads:MaskHead",
        head=True,
    ),
    InterventionKind(
        "zero-head L.H [attn=cross|self] [steps=..] [branch=both|cond|uncond]",
        "engine.intervene.heads:ZeroHead",
        head=True,
    ),
    InterventionKind("drop-words CATEGORY[,CATEGORY..]", "engine.intervene.text:DropWords"),
    InterventionKind("swap-words WORD=WORD [WORD=WORD..]", "engine.intervene.text:SwapWords"),
    InterventionKind(
        "insert-filler WORD [where=before-relation|after-relation|start|end|before-CAT|"
        "after-CAT|N] [count=1]",
        "engine.intervene.text:InsertFiller",
    ),
    InterventionKind(
        'embed-add "+WORD -WORD" [scale=1] [tokens=relation]', "engine.intervene.text:EmbedAdd"
    ),
    InterventionKind(
        'patch L.H from="PROMPT" [attn=cross|self] [what=out|probs] [steps=..] '
        "[branch=cond|uncond|both]",
        "engine.intervene.patch:PatchHead",
        head=True,
    ),
)

INTERVENTIONS: dict[str, InterventionKind] = {k.name: k for k in _KINDS}
