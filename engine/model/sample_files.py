"""Sample a checkpoint into an imagefolder (PNGs + metadata.jsonl) that the evaluator reads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from engine.core.errors import UserError
from engine.core.fs import staged_folder
from engine.core.sampling import SamplingSettings
from engine.data.files import check_output_folder
from engine.data.prompts import Prompt, eval_prompts, parse_prompt, read_prompts_file


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
    sampling: SamplingSettings,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    device: str | None = "auto",
) -> Path:
    """`n` images per prompt, seeds `sampling.seed` .. + n - 1; `sampling` as the caller
    checked it (engine.ops.sample checks it with `n` and the prompts' count)."""
    from engine.model.checkpoint import load_checkpoint
    from engine.model.sampler import sample_images

    out = Path(out)
    seed, batch_size = sampling.seed, sampling.batch_size
    check_output_folder(out, overwrite)
    ckpt = load_checkpoint(ckpt_path, device=device)
    ckpt.text_encoder.tokenize([p.text for p in prompts])  # unknown words fail before sampling
    total = len(prompts) * n
    width = max(5, len(str(total - 1)))
    with staged_folder(out) as tmp, open(tmp / "metadata.jsonl", "w") as meta:
        # Streamed: one batch of images in memory at a time, written as it is sampled (the
        # batches are the ones sample_images would form, so the images are the same).
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            items = [(prompts[i // n], seed + i % n) for i in range(start, stop)]
            imgs = sample_images(
                ckpt, [p.text for p, _ in items], [s for _, s in items], sampling, progress
            )
            for i, ((p, s), img) in enumerate(zip(items, imgs, strict=True), start):
                name = f"{i:0{width}d}.png"
                Image.fromarray(img.numpy()).save(tmp / name)
                meta.write(
                    json.dumps(
                        {
                            "file_name": name,
                            "text": p.text,
                            "seed": s,
                            "steps": sampling.steps,
                            "cfg": sampling.cfg,
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
