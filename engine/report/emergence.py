"""The report's section on when the relation head formed: the stored emergence of
the checkpoint's training run beside its learning curves, or how to produce it."""

from __future__ import annotations

import os

from engine.core.errors import UserError

GPU_RECIPE = (
    "dit-workbench train --preset mini --res 32 --batch 512 --steps 4800 --eval-every 400 \\\n"
    "  --eval-prompts 128 --keep 2 --mixed-precision bf16 --text rte --lr 1e-3 --keep-history \\\n"
    "  --out runs/mini-rte-lr1e-3-history\n"
    "dit-workbench emergence runs/mini-rte-lr1e-3-history --synopsis 32 --format csv \\\n"
    "  --out docs/emergence-mini-rte.csv\n"
    "dit-workbench emergence runs/mini-rte-lr1e-3-history"
)


def emergence_section(run: str | os.PathLike | None, cache_dir=None, top: int = 3) -> list[str]:
    """Markdown lines: the emergence of the run's relation heads beside its learning curves
    when the run kept a history and `emergence` was stored, else how to produce it."""
    from engine.probe.emergence import (
        HEAD_THRESHOLD,
        METRIC_THRESHOLD,
        pass_rows,
        run_curves,
        step_rows,
        stored_emergence,
    )
    from engine.train.history import history_steps

    out = ["### Emergence of the relation head", ""]
    e = None
    if run is not None and history_steps(run):
        try:
            e = stored_emergence(run, cache_dir)
        except UserError:
            e = None
    if e is None:
        why = (
            f"`{run}` kept its history but no emergence is stored; run "
            f"`dit-workbench emergence {run}`."
            if run is not None and history_steps(run)
            else "This run kept no history of its checkpoints, so when its relation head formed "
            "cannot be measured from it."
        )
        return out + [
            why + " To measure it on the GPU recipe (`mini-rte-lr1e-3`, "
            "`checkpoints/mini-rte/train_config.json`, with a checkpoint every 400 steps kept):",
            "",
            "```",
            GPU_RECIPE,
            "```",
            "",
        ]
    curves = run_curves(run)
    heads = e.top_heads(top)
    rows = step_rows(e, heads=heads, curves=curves)
    cols = [c for c in rows[0] if c != "images_seen"]
    out.append(
        f"Emergence run `{e.name}` (`{e.cache}`): weight-space screening of {len(e.steps)} "
        f"kept checkpoints (steps {e.steps[0]}-{e.steps[-1]}); a head's score is its mean "
        "cosine over the 8 relations; the top heads at the last step beside the evaluator:"
    )
    out += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append(
            "| "
            + " | ".join(
                "n/a"
                if r.get(c) is None
                else f"{r[c]:.2f}"
                if isinstance(r[c], float)
                else str(r[c])
                for c in cols
            )
            + " |"
        )
    passes = pass_rows(e, curves, top=top)
    said = []
    for p in passes:
        at = f"step {p['first_pass']}" if p["first_pass"] is not None else "never"
        said.append(f"{p['series']} {at}")
    out += [
        "",
        f"First step at or above the threshold (heads: mean cosine {HEAD_THRESHOLD}; "
        f"evaluator metrics: {METRIC_THRESHOLD:.0%}): " + ", ".join(said) + ".",
        "",
    ]
    return out
