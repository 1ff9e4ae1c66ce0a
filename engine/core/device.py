"""One device rule for every command and job that runs a model.

`--device auto|cpu|cuda|cuda:N`: `auto` is the first CUDA device when torch sees one, else the
CPU. `check_device` checks the spelling without torch (the engine calls it before queueing);
`resolve_device` also checks that the device exists. Inference on CUDA runs under bf16 autocast
(`inference_autocast`); on the CPU it stays float32 and bit-exact.

`python -m engine.core.device` prints what `auto` resolves to, as JSON (the engine's /health
reads it this way, so the server itself never imports torch).
"""

from __future__ import annotations

import contextlib
import json
import re

from engine.core.errors import UserError

DEVICE_HELP = "auto (CUDA when available), cpu, cuda or cuda:N."
_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
# Inference precision on CUDA: "bf16" (default) or "fp32" (what benchmarks/gpu_check compare).
INFERENCE_PRECISION = {"cuda": "bf16"}


def check_device(spec: str | None) -> str:
    """The spec, normalised, or a UserError for a malformed one (no torch needed)."""
    s = "auto" if spec is None else str(spec).strip().lower()
    if not _SPEC.match(s):
        raise UserError(f"unknown device {spec!r}; use {DEVICE_HELP.rstrip('.')}")
    return s


def resolve_device(spec: str | None = "auto"):
    """A torch.device for the spec; UserError when CUDA is asked for and is not there."""
    import torch

    s = check_device(spec)
    if s == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if s == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(
            f"device {s!r} asked for but torch sees no CUDA device "
            f"(torch {torch.__version__}); use --device cpu or auto"
        )
    index = int(s.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise UserError(
            f"device {s!r} does not exist: torch sees {torch.cuda.device_count()} CUDA "
            f"device(s), cuda:0 .. cuda:{torch.cuda.device_count() - 1}"
        )
    return torch.device("cuda", index)


def inference_autocast(device):
    """bf16 autocast on CUDA (unless INFERENCE_PRECISION says fp32); nothing on the CPU."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and INFERENCE_PRECISION["cuda"] == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe(spec: str | None = "auto") -> dict:
    """What a spec resolves to: {"device", "name", "precision"} (for `info` and /health)."""
    import torch

    dev = resolve_device(spec)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        precision = INFERENCE_PRECISION["cuda"]
    else:
        name, precision = f"{torch.get_num_threads()} threads", "fp32"
    return {"device": str(dev), "name": name, "precision": precision}


def label(d: dict | None) -> str:
    """'cuda:0 (NVIDIA H200, bf16)' / 'cpu (2 threads, fp32)'; '' for nothing known."""
    if not d or not d.get("device"):
        return ""
    return f"{d['device']} ({d.get('name', '?')}, {d.get('precision', '?')})"


if __name__ == "__main__":
    print(json.dumps(describe("auto")))
