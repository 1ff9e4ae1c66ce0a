"""Pretrained PixArt pipelines: a local diffusers PixArt-alpha / PixArt-Sigma folder as a
checkpoint, without copying its weights.

`import_pipeline(DIR, CKPT)` checks the folder (``model_index.json`` of a PixArt pipeline,
``transformer/``, ``text_encoder/`` (T5), ``tokenizer/``, ``vae/``, ``scheduler/``, safetensors
weights only, no symlink leading out of the folder), hashes every file of every part and writes
``CKPT/workbench.json`` that names each part by absolute path with its files' sha256 and sizes.
The small config files the rest of the workbench reads without loading a model are copied:
``CKPT/transformer/config.json`` and ``CKPT/text_encoder/config.json`` (our encoder record).
Sizes, token grid and latent shape are read from the pipeline's configs, and its scheduler
config is what sampling uses (``engine.model.sampler.sample_scheduler``).

`load_pipeline_parts` (called by ``load_checkpoint`` for such a checkpoint) checks each
part's files against the recorded sizes (and the transformer's sha256, as for our checkpoints;
another part is hashed again when its size or mtime changed), then builds the transformer
(float32), a frozen T5 encoder with the pipeline's tokenizer (captions padded to our 20
tokens; token categories from the tokenizer's offsets) and the VAE codec.

Why import and not open DIR directly: the workbench keys its cache, job records and TUI
checkpoint list by a checkpoint folder with ``workbench.json`` and a transformer hash; an import
records the hashes once (hashing a T5-XXL takes minutes) and lets the pipeline folder stay
read-only (nothing of ours is written into it); see docs/pretrained.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from engine.core.errors import UserError
from engine.core.fs import sha256_file, staged_folder

PIPELINE_CLASSES = ("PixArtAlphaPipeline", "PixArtSigmaPipeline")
PARTS = ("transformer", "text_encoder", "tokenizer", "vae", "scheduler")
# The weights file (or sharded index) each model part must have, safetensors only.
WEIGHT_NAMES = {
    "transformer": "diffusion_pytorch_model.safetensors",
    "vae": "diffusion_pytorch_model.safetensors",
    "text_encoder": "model.safetensors",
}
EXPECTED_CLASSES = {
    "transformer": ("PixArtTransformer2DModel", "Transformer2DModel"),
    "text_encoder": ("T5EncoderModel",),
    "tokenizer": ("T5Tokenizer", "T5TokenizerFast"),
    "vae": ("AutoencoderKL",),
}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SOURCE = "pipeline"


def is_pipeline_meta(meta: dict) -> bool:
    return isinstance(meta, dict) and meta.get("source") == SOURCE


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what} is missing ({path}); the pipeline folder is incomplete") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {path} ({type(e).__name__}: {e}); it is damaged") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a JSON object; it is damaged")
    return data


def _part_files(root: Path, part: str) -> list[Path]:
    """The regular files of a part (recursively), refusing symlinks that leave `root`."""
    d = root / part
    if d.is_symlink() and not _inside(d, root):
        raise UserError(f"{d} is a symlink out of the pipeline folder; copy the part into it")
    if not d.is_dir():
        raise UserError(f"pipeline folder {str(root)!r} has no {part}/ folder; it is incomplete")
    files = []
    for dirpath, dirnames, filenames in os.walk(d, followlinks=False):
        for name in sorted(dirnames + filenames):
            f = Path(dirpath) / name
            if f.is_symlink() and not _inside(f, root):
                raise UserError(
                    f"{f} is a symlink to {os.path.realpath(f)}, outside the pipeline folder; "
                    "give a folder holding real files (cp -rL it, or download with --local-dir)"
                )
            if name in filenames and f.is_file():
                if f.suffix in PICKLE_SUFFIXES:
                    raise UserError(
                        f"{f} is a pickle-format file; the workbench loads safetensors only "
                        "(convert the weights or remove the file)"
                    )
                files.append(f)
    return sorted(files)


def _inside(path: Path, root: Path) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base + os.sep)


def _weights(root: Path, part: str, files: list[Path]) -> list[Path]:
    name = WEIGHT_NAMES[part]
    d = root / part
    if (d / name).is_file():
        return [d / name]
    index = d / f"{name}.index.json"
    if index.is_file():
        shards = sorted(set(_read_json(index, f"{part} index").get("weight_map", {}).values()))
        missing = [s for s in shards if not (d / s).is_file()]
        if not shards or missing:
            raise UserError(f"{index} names shards that are missing ({missing[:2]}); re-download")
        return [index] + [d / s for s in shards]
    others = [f.name for f in files if f.name.endswith(".safetensors")]
    hint = f" (found {others[0]!r}: variant weights are not supported)" if others else ""
    raise UserError(f"{d} has no {name} (or its sharded index){hint}; it is incomplete")


def part_hash(records: dict[str, dict], weights: list[str]) -> str:
    """A part's hash: its weights file's sha256 when it has one (the same value our own
    checkpoints record), else the sha256 of "name sha256" lines over the part's files."""
    if len(weights) == 1:
        return records[weights[0]]["sha256"]
    names = weights or sorted(records)
    lines = "".join(f"{n} {records[n]['sha256']}\n" for n in names)
    return hashlib.sha256(lines.encode()).hexdigest()


def inspect_pipeline(directory: str | os.PathLike) -> dict:
    """Check a pipeline folder and read what the workbench needs from its configs (no hashing,
    no model built). UserError (one line) for anything that is not a usable PixArt pipeline."""
    root = Path(directory).expanduser()
    if not root.exists():
        raise UserError(f"pipeline folder {str(root)!r} does not exist; give a local folder")
    if not root.is_dir():
        raise UserError(f"{str(root)!r} is not a folder; give a diffusers pipeline folder")
    root = root.resolve()
    index = _read_json(root / "model_index.json", "model_index.json")
    cls = index.get("_class_name")
    if cls not in PIPELINE_CLASSES:
        raise UserError(
            f"{root} holds a {cls!r} pipeline, not PixArt; give a PixArt-alpha or PixArt-Sigma "
            "folder (model_index.json _class_name PixArtAlphaPipeline or PixArtSigmaPipeline)"
        )
    parts: dict[str, dict] = {}
    for part in PARTS:
        entry = index.get(part)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1]):
            raise UserError(f"{root}/model_index.json names no {part}; the pipeline is incomplete")
        want = EXPECTED_CLASSES.get(part)
        if want and entry[1] not in want:
            raise UserError(
                f"the pipeline's {part} is a {entry[1]!r}; the workbench needs {' or '.join(want)}"
            )
        files = _part_files(root, part)
        weights = _weights(root, part, files) if part in WEIGHT_NAMES else []
        parts[part] = {"class": entry[1], "files": files, "weights": weights}
    tcfg = _read_json(root / "transformer" / "config.json", "transformer/config.json")
    vcfg = _read_json(root / "vae" / "config.json", "vae/config.json")
    ecfg = _read_json(root / "text_encoder" / "config.json", "text_encoder/config.json")
    scfg = _read_json(root / "scheduler" / "scheduler_config.json", "scheduler_config.json")
    tok = root / "tokenizer"
    if not any((tok / n).is_file() for n in ("tokenizer.json", "spiece.model")):
        raise UserError(f"{tok} has neither tokenizer.json nor spiece.model; it is incomplete")
    if ecfg.get("model_type") != "t5":
        raise UserError(f"the text encoder is {ecfg.get('model_type')!r}, not T5; not a PixArt one")
    try:
        sample, patch = int(tcfg["sample_size"]), int(tcfg["patch_size"])
        in_ch = int(tcfg["in_channels"])
        caption = int(tcfg["caption_channels"])
        d_model = int(ecfg["d_model"])
        latent_ch = int(vcfg["latent_channels"])
        down = 2 ** (len(vcfg["block_out_channels"]) - 1)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"the pipeline's configs lack {e}; they are damaged") from None
    if tcfg.get("pos_embed_max_size"):
        raise UserError("the transformer uses pos_embed_max_size (not PixArt's); cannot open it")
    if sample % patch:
        raise UserError(f"transformer sample_size {sample} is not a multiple of patch {patch}")
    if in_ch != latent_ch:
        raise UserError(f"the transformer takes {in_ch} channels but the VAE gives {latent_ch}")
    if caption != d_model:
        raise UserError(f"the transformer takes {caption}-d captions but the T5 gives {d_model}")
    sched_cls = scfg.get("_class_name")
    import diffusers

    if not isinstance(sched_cls, str) or not hasattr(diffusers, sched_cls):
        raise UserError(f"unknown scheduler {sched_cls!r} in scheduler_config.json")
    return {
        "root": root,
        "class": cls,
        "parts": parts,
        "transformer_config": tcfg,
        "scheduler": scfg,
        "grid": [sample // patch, sample // patch],
        "latent": [latent_ch, sample, sample],
        "patch_size": patch,
        "res": sample * down,
        "layers": int(tcfg.get("num_layers", 0)),
        "heads": int(tcfg.get("num_attention_heads", 0)),
        "caption_channels": caption,
    }


def import_pipeline(directory: str | os.PathLike, out: str | os.PathLike, progress=None) -> Path:
    """Write checkpoint folder `out` that opens the pipeline in `directory` in place."""
    from engine.model.format import FORMAT
    from engine.text.base import write_config

    info = inspect_pipeline(directory)
    dst = Path(out).expanduser()
    if dst.exists():
        raise UserError(f"{str(dst)!r} exists; choose a new folder for the imported checkpoint")
    if not dst.parent.is_dir():
        raise UserError(f"{str(dst.parent)!r} does not exist; create it first")
    root: Path = info["root"]
    parts_meta, hashes = {}, {}
    for part in PARTS:
        p = info["parts"][part]
        records = {}
        for f in p["files"]:
            if progress:
                progress(part, f.name)
            st = f.stat()
            rel = f.relative_to(root / part).as_posix()
            records[rel] = {
                "sha256": sha256_file(f),
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
            }
        weights = [w.relative_to(root / part).as_posix() for w in p["weights"]]
        hashes[part] = part_hash(records, weights)
        parts_meta[part] = {
            "path": str(root / part),
            "class": p["class"],
            "weights": weights,
            "files": records,
        }
    meta = {
        "format": FORMAT,
        "source": SOURCE,
        "pipeline": {"path": str(root), "class": info["class"], "parts": parts_meta},
        "preset": None,
        "text": f"t5:{root / 'text_encoder'}",
        "codec": f"vae:{root / 'vae'}",
        "res": info["res"],
        "grid": info["grid"],
        "latent": info["latent"],
        "patch_size": info["patch_size"],
        "scheduler": info["scheduler"],
        "hashes": hashes,
        "imported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        with staged_folder(dst) as tmp:
            (tmp / "transformer").mkdir()
            shutil.copy2(root / "transformer" / "config.json", tmp / "transformer" / "config.json")
            write_config(
                tmp,
                {
                    "spec": meta["text"],
                    "kind": "pipeline-t5",
                    "tokenizer": str(root / "tokenizer"),
                    "dim": info["caption_channels"],
                },
            )
            (tmp / "workbench.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    except OSError as e:
        raise UserError(
            f"cannot write {str(dst)!r} ({e.strerror or e}); check the folder"
        ) from None
    return dst


def _check_part(meta: dict, part: str, rehash: bool) -> Path:
    """The part's folder after checking its files against workbench.json."""
    pm = meta["pipeline"]["parts"][part]
    d = Path(pm["path"])
    if not d.is_dir():
        raise UserError(
            f"the imported pipeline's {part} folder {str(d)!r} is gone; restore it or import again"
        )
    changed = rehash
    for rel, rec in pm["files"].items():
        f = d / rel
        try:
            st = f.stat()
        except OSError:
            raise UserError(
                f"{f} is missing; restore the pipeline folder or import again"
            ) from None
        if st.st_size != rec["size"]:
            raise UserError(
                f"{f} has {st.st_size} bytes, {rec['size']} when imported; restore it or import again"
            )
        changed = changed or st.st_mtime_ns != rec.get("mtime_ns")
    if changed:
        records = {rel: {"sha256": sha256_file(d / rel)} for rel in pm["files"]}
        for rel, rec in records.items():
            if rec["sha256"] != pm["files"][rel]["sha256"]:
                raise UserError(
                    f"{d / rel} does not match its sha256 in workbench.json (replaced or damaged); "
                    "restore it or import the pipeline again"
                )
    return d


def load_pipeline_parts(p: Path, meta: dict, verify_hash: bool = True):
    """(transformer, text encoder, codec) of an imported pipeline, for the Checkpoint that
    engine.model.checkpoint builds; see the module doc."""
    import torch
    from diffusers import PixArtTransformer2DModel
    from diffusers.utils import logging as diffusers_logging

    try:
        dirs = {part: _check_part(meta, part, verify_hash and part == "transformer")
                for part in PARTS}  # fmt: skip
    except (KeyError, TypeError):
        raise UserError(f"{p}/workbench.json lacks the pipeline's parts; import it again") from None
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        transformer = PixArtTransformer2DModel.from_pretrained(
            dirs["transformer"], local_files_only=True, use_safetensors=True,
            torch_dtype=torch.float32,
        )  # fmt: skip
    except Exception as e:  # diffusers raises several types for bad weights
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"cannot load {dirs['transformer']}: {reason}") from None
    finally:
        diffusers_logging.set_verbosity(verbosity)
    transformer.eval().requires_grad_(False)
    transformer.workbench_scheduler_config = dict(meta["scheduler"])
    from engine.text.t5_pipeline import PipelineT5Encoder

    text_encoder = PipelineT5Encoder.from_parts(dirs["text_encoder"], dirs["tokenizer"])
    if text_encoder.dim != transformer.config.caption_channels:
        raise UserError(
            f"the T5 gives {text_encoder.dim}-d embeddings, the transformer expects "
            f"{transformer.config.caption_channels}; the pipeline is mismatched"
        )
    codec = pipeline_codec(dirs["vae"], meta)
    transformer.workbench_pixel_res = codec.res
    return transformer, text_encoder, codec


def pipeline_codec(vae_dir: Path, meta: dict):
    """The VAE codec with the latent shape and patch size the pipeline's configs give."""
    from engine.model.codec import VAECodec

    codec = VAECodec.__new__(VAECodec)
    from diffusers import AutoencoderKL

    try:
        codec.vae = AutoencoderKL.from_pretrained(
            vae_dir, local_files_only=True, use_safetensors=True
        )
    except (OSError, ValueError) as e:
        raise UserError(
            f"cannot load the VAE in {str(vae_dir)!r}: {str(e).splitlines()[0]}"
        ) from None
    codec.vae.requires_grad_(False).eval()
    codec.spec = f"vae:{vae_dir}"
    codec.res = int(meta["res"])
    codec.channels, codec.latent_size = int(meta["latent"][0]), int(meta["latent"][1])
    codec.patch_size = int(meta["patch_size"])
    codec.scale = float(codec.vae.config.scaling_factor)
    return codec


def synopsis_bytes_per_sample(transformer, latent_size: int, self_attn: bool = False) -> int:
    """Estimated peak memory of one synopsis sample (see fit_batch)."""
    cfg = transformer.config
    n = (latent_size // cfg.patch_size) ** 2
    width = cfg.num_attention_heads * cfg.attention_head_dim
    per_sample = 2 * n * width * 4 * (8 + cfg.num_layers)  # CFG pair, float32 worst case
    if self_attn:
        per_sample += 2 * cfg.num_attention_heads * n * n * 4 * 3  # scores, probs, product
    return per_sample


def fit_batch(ckpt, requested: int, self_attn: bool = False, free_bytes: int | None = None) -> int:
    """The synopsis batch for a pretrained model: `requested`, made smaller on CUDA until an
    estimate of its peak memory fits in 60% of the free memory (activations of the CFG pair
    through one block, kept for every layer's residual, plus one layer's full self-attention
    probabilities when --self-attn takes the explicit path). Unchanged on the CPU."""
    import torch

    if free_bytes is None:
        dev = next(ckpt.transformer.parameters()).device
        if dev.type != "cuda":
            return requested
        free_bytes, _ = torch.cuda.mem_get_info(dev)
    per_sample = synopsis_bytes_per_sample(ckpt.transformer, ckpt.codec.latent_size, self_attn)
    return max(1, min(requested, int(free_bytes * 0.6) // per_sample))
