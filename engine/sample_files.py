"""Sample a checkpoint into an imagefolder (PNGs + metadata.jsonl) that the evaluator reads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from engine.data.files import check_output_folder, staged_folder
from engine.data.prompts import Prompt, eval_prompts, parse_prompt, read_prompts_file
from engine.errors import UserError


def collect_prompts(texts: list[str] | None, file: Path | None, eval_set: bool) -> list[Prompt]:
    chosen = sum(bool(x) for x in (texts, file, eval_set))
    if chosen != 1:
        raise UserError("give exactly one of --prompt TEXT, --prompts-file F or --eval-set")
    if eval_set:
        return eval_prompts()
    if file:
        return read_prompts_file(file)
    return [parse_prompt(t) for t in texts]


def write_samples(
    ckpt_path,
    out,
    prompts: list[Prompt],
    n: int,
    seed: int,
    steps: int,
    cfg: float,
    batch_size: int,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    from engine.model.checkpoint import load_checkpoint
    from engine.model.sampler import sample_images

    for name, v in (("--n", n), ("--steps", steps), ("--batch-size", batch_size)):
        if v <= 0:
            raise UserError(f"{name} must be positive (got {v})")
    out = Path(out)
    check_output_folder(out, overwrite)
    ckpt = load_checkpoint(ckpt_path)
    ckpt.text_encoder.tokenize([p.text for p in prompts])  # unknown words fail before sampling
    items = [(p, seed + k) for p in prompts for k in range(n)]
    imgs = sample_images(
        ckpt, [p.text for p, _ in items], [s for _, s in items], steps, cfg, batch_size, progress
    )
    with staged_folder(out) as tmp:
        width = max(5, len(str(len(items) - 1)))
        with open(tmp / "metadata.jsonl", "w") as meta:
            for i, ((p, s), img) in enumerate(zip(items, imgs, strict=True)):
                name = f"{i:0{width}d}.png"
                Image.fromarray(img.numpy()).save(tmp / name)
                meta.write(
                    json.dumps(
                        {
                            "file_name": name,
                            "text": p.text,
                            "seed": s,
                            "steps": steps,
                            "cfg": cfg,
                            "checkpoint": str(ckpt.path),
                            "checkpoint_sha256": ckpt.hash,
                            "shape1": p.shape1,
                            "shape2": p.shape2,
                            "relation": p.relation,
                        }
                    )
                    + "\n"
                )
    return out
