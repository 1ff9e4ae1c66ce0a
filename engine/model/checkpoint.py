"""Checkpoints: a diffusers `transformer/` folder (EMA weights), `workbench.json`, the text
encoder's own files. Plain `PixArtTransformer2DModel.from_pretrained(CKPT / "transformer")` opens
the model; `load_checkpoint` also validates everything and rebuilds the encoder and codec.

A training run folder holds `step-NNNNNNN/` checkpoints and a `latest` symlink; loading a run
folder follows `latest`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.core.errors import UserError

if TYPE_CHECKING:  # torch and diffusers load only when a model is: describe() stays cheap
    from diffusers import PixArtTransformer2DModel

    from engine.store.cache import Store

# Re-exported: they are the checkpoint format's names.
from engine.core.fs import sha256_file  # noqa: E402,F401
from engine.model.format import FORMAT, WEIGHTS  # noqa: E402,F401


def resolve_checkpoint_dir(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or a run folder whose `latest` link points to one."""
    p = Path(path)
    if not p.exists():
        raise UserError(
            f"checkpoint {str(p)!r} does not exist; give a checkpoint or training run folder"
        )
    if not p.is_dir():
        raise UserError(
            f"checkpoint {str(p)!r} is not a folder; give a checkpoint or training run folder"
        )
    if not (p / "workbench.json").is_file() and (p / "latest").exists():
        p = (p / "latest").resolve()
    if not (p / "workbench.json").is_file():
        raise UserError(
            f"{str(p)!r} is not a dit-workbench checkpoint (no workbench.json); "
            "give a folder written by `dit-workbench train`"
        )
    return p


@dataclass
class Checkpoint:
    path: Path
    meta: dict
    transformer: PixArtTransformer2DModel
    text_encoder: object
    codec: object
    extras: dict = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return self.meta["hashes"]["transformer"]

    @property
    def num_layers(self) -> int:
        return self.transformer.config.num_layers

    @property
    def num_heads(self) -> int:
        return self.transformer.config.num_attention_heads

    def to(self, device) -> Checkpoint:
        self.transformer.to(device)
        self.text_encoder.to(device)
        self.codec.to(device)
        return self


def read_meta(path: str | os.PathLike) -> tuple[Path, dict]:
    p = resolve_checkpoint_dir(path)
    where = p / "workbench.json"
    try:
        meta = json.loads(where.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{where} is not valid JSON ({e.msg}); the checkpoint is damaged") from None
    except UnicodeDecodeError:
        raise UserError(f"{where} is not UTF-8 text; the checkpoint is damaged") from None
    except OSError as e:
        raise UserError(f"cannot read {where} ({e.strerror or e}); check its permissions") from None
    if not isinstance(meta, dict):
        raise UserError(f"{where} is not a JSON object; the checkpoint is damaged")
    if meta.get("format") != FORMAT:
        raise UserError(f"{where} has format {meta.get('format')!r}, expected {FORMAT!r}")
    # Every reader keys the cache by this hash: a checkpoint without it is unusable.
    hashes = meta.get("hashes")
    if not isinstance(hashes, dict) or not isinstance(hashes.get("transformer"), str):
        raise UserError(
            f"{where} has no transformer hash; the checkpoint is damaged (retrain or restore it)"
        )
    _check_meta_types(meta, where)
    return p, meta


def store_for_path(
    checkpoint: str | os.PathLike, cache_dir: str | os.PathLike | None = None
) -> Store:
    """The cache (engine.store.cache.Store) of a checkpoint named by path, keyed by the hash in
    its metadata without loading the model (no torch): what table requests read."""
    from types import SimpleNamespace

    from engine.store.cache import Store

    path, meta = read_meta(checkpoint)
    ref = SimpleNamespace(path=path, hash=meta["hashes"]["transformer"])
    return Store.for_checkpoint(ref, cache_dir)


# workbench.json fields every reader uses, and the types they must have.
_META_TYPES = {"text": str, "codec": str, "res": int, "step": int, "preset": str, "dtype": str}


def _check_meta_types(meta: dict, where: Path) -> None:
    from engine.core.limits import shown

    for key, t in _META_TYPES.items():
        v = meta.get(key)
        if v is None and key in ("step", "preset", "dtype"):
            continue
        if v is None and key in ("text", "codec", "res") and meta.get("source") == "pipeline":
            continue
        if isinstance(v, bool) or not isinstance(v, t):
            what = "an integer" if t is int else "a string"
            raise UserError(
                f"{where}: {key!r} is {shown(v)}, not {what}; the checkpoint is damaged"
            )
    res = meta.get("res")
    if isinstance(res, int) and not 1 <= res <= 4096:
        raise UserError(f"{where}: 'res' is {res}, not a side from 1 to 4096 pixels")


def model_config(p: Path) -> dict:
    """transformer/config.json, checked (a mapping, sizes within engine.core.limits' bounds) before
    a model is built from it; damage gives one line naming the file."""
    from engine.core.fs import read_json
    from engine.core.limits import check_model_config

    where = p / "transformer" / "config.json"
    if not where.exists() and not where.is_symlink():
        raise UserError(
            f"{p} is not a complete checkpoint (no transformer/config.json); point at a folder "
            "written by `dit-workbench train`"
        )
    return check_model_config(read_json(where, "transformer config"), where)


def load_checkpoint(
    path: str | os.PathLike, verify_hash: bool = True, device: str | None = None
) -> Checkpoint:
    """The checkpoint, on `device` (engine.core.device's rule: auto, cpu, cuda, cuda:N) when given,
    else on the CPU."""
    import torch

    from engine.core.device import resolve_device

    dev = resolve_device(device) if device is not None else None  # a bad device fails first
    from diffusers import PixArtTransformer2DModel

    from engine.model.codec import build_codec
    from engine.text import load_text_encoder

    p, meta = read_meta(path)
    if meta.get("source") == "pipeline":  # an imported diffusers pipeline (engine.model.pipeline)
        from engine.model.pipeline import load_pipeline_parts

        ck = Checkpoint(p, meta, *load_pipeline_parts(p, meta, verify_hash))
        return ck.to(dev) if dev is not None and dev.type != "cpu" else ck
    weights = p / "transformer" / WEIGHTS
    if not (p / "transformer" / "config.json").is_file() or not weights.is_file():
        raise UserError(
            f"checkpoint {str(p)!r} lacks transformer/config.json or {WEIGHTS}; it is incomplete"
        )
    if verify_hash and sha256_file(weights) != meta["hashes"]["transformer"]:
        raise UserError(
            f"{weights} does not match the hash in workbench.json (truncated or replaced); "
            "restore the file or retrain"
        )
    model_config(p)  # sizes within engine.core.limits before anything is allocated
    from diffusers.utils import logging as diffusers_logging

    # A weights file that does not fit config.json makes diffusers print many-line warnings and
    # leave the missing tensors on the "meta" device (torch then fails deep in sampling): keep
    # it quiet here and refuse such a model below, in one line.
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        # float32 whatever the file holds: fp16-shipped weights run (and hash) the same way
        # on every device, and CPU kernels for half precision are slow or missing.
        transformer = PixArtTransformer2DModel.from_pretrained(
            p / "transformer",
            local_files_only=True,
            use_safetensors=True,
            torch_dtype=torch.float32,
        )
    except Exception as e:  # diffusers raises several types for bad weights
        # (its size-mismatch message goes on to suggest loading anyway: not for a checkpoint)
        reason = (str(e).splitlines() or [type(e).__name__])[0].split(" If you want")[0]
        raise UserError(
            f"cannot load {p / 'transformer'}: {reason[:200]}; the weights do not fit "
            "transformer/config.json, restore the checkpoint or retrain"
        ) from None
    finally:
        diffusers_logging.set_verbosity(verbosity)
    missing = [n for n, t in transformer.state_dict().items() if t.is_meta]
    if missing:
        raise UserError(
            f"{weights} lacks {len(missing)} of the tensors transformer/config.json needs "
            f"(e.g. {missing[0]!r}); the weights and config do not match, restore them or retrain"
        )
    transformer.eval().requires_grad_(False)
    text_encoder = load_text_encoder(p)
    if text_encoder.dim != transformer.config.caption_channels:
        raise UserError(
            f"text encoder {meta['text']!r} gives {text_encoder.dim}-d embeddings but the transformer "
            f"expects {transformer.config.caption_channels}; the checkpoint is mismatched"
        )
    codec = build_codec(meta["codec"], meta["res"])
    ck = Checkpoint(p, meta, transformer, text_encoder, codec)
    return ck.to(dev) if dev is not None and dev.type != "cpu" else ck


def save_checkpoint(
    directory: Path,
    transformer: PixArtTransformer2DModel,
    text_encoder,
    meta: dict,
) -> Path:
    """Write transformer/, the encoder's files and workbench.json into `directory` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    transformer.save_pretrained(directory / "transformer", safe_serialization=True)
    text_encoder.save(directory)
    meta = {
        "format": FORMAT,
        **meta,
        "hashes": {"transformer": sha256_file(directory / "transformer" / WEIGHTS)},
    }
    (directory / "workbench.json").write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def export_checkpoint(
    src: str | os.PathLike, dst: str | os.PathLike, fp16: bool = False, curves: bool = True
) -> Path:
    """Copy a checkpoint's weights, encoder and metadata (not its training state) into `dst`,
    optionally with the transformer in float16; the new hash goes into workbench.json.
    `curves`: also copy the run's metrics.jsonl up to this step (a run's kept history,
    `RUN/history/step-N/`, counts as that run's)."""
    from engine.core.fs import check_tree, staged_folder

    p, meta = read_meta(src)
    if meta.get("source") == "pipeline":
        raise UserError(
            f"{p} is an imported pipeline whose weights stay in {meta['pipeline']['path']}; "
            "copy that folder instead of exporting"
        )
    out = Path(dst)
    if out.exists() or out.is_symlink():
        raise UserError(f"{str(out)!r} exists; choose a new folder for the export")
    # Nothing is followed out of the checkpoint: links leading out, loops and special files
    # are refused before any byte is read or copied; links inside it stay links.
    check_tree(p, f"cannot export {p}", skip=("train_state",))
    weights = p / "transformer" / WEIGHTS
    if sha256_file(weights) != meta["hashes"]["transformer"]:
        raise UserError(f"{weights} does not match its hash; export from an intact checkpoint")
    with staged_folder(out, create=False) as tmp:  # no partial folder is ever left behind
        _export_into(p, tmp, meta, weights, fp16, curves)
    return out


def _export_into(p: Path, tmp: Path, meta: dict, weights: Path, fp16: bool, curves: bool):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(p, tmp, symlinks=True, ignore=shutil.ignore_patterns("train_state"))
    if fp16:
        state = {k: v.to(torch.float16) if v.is_floating_point() else v
                 for k, v in load_file(weights).items()}  # fmt: skip
        save_file(state, tmp / "transformer" / WEIGHTS, metadata={"format": "pt"})
    dtype = "float16" if fp16 else meta.get("dtype", "float32")
    meta = {**meta, "exported_from": str(p), "dtype": dtype,
            "hashes": {"transformer": sha256_file(tmp / "transformer" / WEIGHTS)}}  # fmt: skip
    (tmp / "workbench.json").write_text(json.dumps(meta, indent=2) + "\n")
    run = p.parent.parent if p.parent.name == "history" else p.parent
    metrics = run / "metrics.jsonl"
    if curves and _plain(metrics) and not (tmp / "metrics.jsonl").exists():
        # The learning curves up to this checkpoint travel with it (for `curves` and `report`);
        # files of the run that are links are not followed, lines that are not records dropped.
        step = meta.get("step")
        lines = [line for line in metrics.read_text().splitlines() if _upto(line, step)]
        (tmp / "metrics.jsonl").write_text("".join(f"{line}\n" for line in lines))
        if _plain(run / "train_config.json"):
            shutil.copy2(run / "train_config.json", tmp / "train_config.json")


def _plain(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _upto(line: str, step) -> bool:
    """A metrics.jsonl line that is a record of a step up to `step` (any, if None)."""
    try:
        rec = json.loads(line)
    except ValueError:
        return False
    if not isinstance(rec, dict):
        return False
    s = rec.get("step", 0)
    if step is None:
        return True
    return isinstance(s, int | float) and not isinstance(s, bool) and s <= step


def describe(ckpt_path: str | os.PathLike) -> dict:
    """What `dit-workbench info` prints, without building the model."""
    p, meta = read_meta(ckpt_path)
    try:
        cfg = model_config(p)
        hashes = meta["hashes"]["transformer"]
        text, codec, res = meta["text"], meta["codec"], meta["res"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(
            f"{p} is not a complete checkpoint ({type(e).__name__}: {e}); "
            "point at a folder written by `dit-workbench train`"
        ) from None
    return {
        "path": str(p),
        "preset": meta.get("preset"),
        "layers": cfg["num_layers"],
        "heads": cfg["num_attention_heads"],
        "width": cfg["num_attention_heads"] * cfg["attention_head_dim"],
        "text": text,
        "codec": codec,
        "res": res,
        "step": meta.get("step"),
        "transformer_sha256": hashes[:16],
        "params": _param_count(*_weight_files(p, meta)),
    }


def _weight_files(p: Path, meta: dict) -> list[Path]:
    """The transformer's safetensors files (an imported pipeline's may be sharded elsewhere)."""
    part = (meta.get("pipeline") or {}).get("parts", {}).get("transformer")
    if meta.get("source") == "pipeline" and isinstance(part, dict):
        names = [w for w in part.get("weights", []) if w.endswith(".safetensors")]
        return [Path(part["path"]) / w for w in names]
    return [p / "transformer" / WEIGHTS]


def _param_count(*files: Path) -> str:
    """Parameters in the weights files, read from their safetensors headers (no tensors loaded)."""
    from math import prod

    from safetensors import SafetensorError, safe_open

    n = 0
    try:
        for weights in files:
            with safe_open(weights, "np") as f:  # header only; "np" avoids importing torch
                n += sum(prod(f.get_slice(k).get_shape()) for k in f.keys())
    except (OSError, SafetensorError) as e:  # a truncated or foreign file
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(
            f"cannot read {weights} ({reason}); the checkpoint is damaged, restore it or retrain"
        ) from None
    return f"{n / 1e6:.2f}M"
