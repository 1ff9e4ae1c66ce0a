"""The one device rule (engine.core.device): spelling, resolution, every model command and job kind
takes it, and CUDA-only checks (marked `gpu`, skipped without CUDA)."""

from __future__ import annotations

import sys

import pytest
import torch
from clirunner import run_cli as _run

from engine.core.device import check_device, describe, inference_autocast, label, resolve_device
from engine.core.errors import UserError

CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")


@pytest.mark.parametrize(
    "spec,want", [("auto", "auto"), (" CPU ", "cpu"), ("cuda", "cuda"), ("cuda:3", "cuda:3")]
)
def test_check_device_normalises_good_spellings(spec, want):
    assert check_device(spec) == want


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:x", "mps:0", "", "cpu:0"])
def test_check_device_refuses_bad_spellings_in_one_line(spec):
    with pytest.raises(UserError, match="unknown device") as e:
        check_device(spec)
    assert "\n" not in str(e.value)


def test_resolve_auto_follows_torch_and_cpu_is_cpu():
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    d = describe("cpu")
    assert d["device"] == "cpu" and d["precision"] == "fp32"
    assert label(d).startswith("cpu (") and label(None) == ""


@pytest.mark.skipif(CUDA, reason="checks the message when CUDA is missing")
def test_resolve_cuda_without_cuda_is_a_clear_error():
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(UserError, match="no CUDA device"):
            resolve_device(spec)


def test_autocast_is_a_no_op_on_cpu():
    with inference_autocast("cpu"):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32


def test_cpu_sampling_is_bit_exact_between_runs(nano_ckpt):
    from engine.core.sampling import SamplingSettings
    from engine.model.checkpoint import load_checkpoint
    from engine.model.sampler import sample_images

    texts, two = ["red circle above blue square"] * 2, SamplingSettings(steps=2)
    a = sample_images(load_checkpoint(nano_ckpt, device="cpu"), texts, [0, 1], two)
    b = sample_images(load_checkpoint(nano_ckpt), texts, [0, 1], two)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "cmd",
    [
        ["sample", "{ck}", "--out", "{tmp}/s", "--prompt", "red circle above blue square"],
        ["synopsis", "{ck}", "--cache", "{tmp}/c"],
        ["ablate", "{ck}", "-i", "mask-head 0.0 tokens=relation", "--cache", "{tmp}/c"],
        ["variance", "{ck}", "--cache", "{tmp}/c"],
        ["screen", "{ck}", "--cache", "{tmp}/c"],
        ["train", "--out", "{tmp}/run", "--preset", "nano", "--steps", "1"],
    ],
    ids=lambda c: c[0],
)
def test_every_model_command_takes_device_and_refuses_a_bad_one(
    cmd, nano_ckpt, tmp_path, capsys, monkeypatch
):
    args = [a.format(ck=nano_ckpt, tmp=tmp_path) for a in cmd]
    code, out, err = _run([*args, "--device", "tpu"], capsys, monkeypatch)
    assert code == 2 and err.startswith("error: unknown device 'tpu'"), err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists() and not (tmp_path / "run").exists()
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


@pytest.mark.skipif(CUDA, reason="checks the message when CUDA is missing")
def test_sample_on_missing_cuda_is_one_line_exit_2(nano_ckpt, tmp_path, capsys, monkeypatch):
    args = [
        "sample",
        nano_ckpt,
        "--out",
        tmp_path / "s",
        "--prompt",
        "red circle above blue square",
    ]
    code, out, err = _run([*args, "--device", "cuda"], capsys, monkeypatch)
    assert code == 2 and "no CUDA device" in err and not (tmp_path / "s").exists()


def test_sample_with_device_cpu_writes_the_same_images_as_auto_on_cpu(
    nano_ckpt, tmp_path, capsys, monkeypatch
):
    if CUDA:
        pytest.skip("auto is CUDA here")
    for name, dev in (("a", "auto"), ("b", "cpu")):
        args = [
            "sample",
            nano_ckpt,
            "--out",
            tmp_path / name,
            "--prompt",
            "red circle above blue square",
        ]
        code, _, err = _run([*args, "--steps", "2", "--device", dev], capsys, monkeypatch)
        assert code == 0, err
    assert (tmp_path / "a" / "00000.png").read_bytes() == (
        tmp_path / "b" / "00000.png"
    ).read_bytes()


def test_info_says_where_auto_runs(nano_ckpt, capsys, monkeypatch):
    code, out, err = _run(["info", nano_ckpt, "--format", "json"], capsys, monkeypatch)
    assert code == 0, err
    import json

    assert json.loads(out)["device"] == label(describe("auto"))


@pytest.mark.parametrize("kind", ["sample", "ablate", "variance", "synopsis", "screen", "train"])
def test_every_model_job_kind_checks_its_device_before_queueing(kind, nano_ckpt, tmp_path):
    from engine.service.kinds import get_kind

    base = {
        "sample": {
            "checkpoint": str(nano_ckpt),
            "out": str(tmp_path / "s"),
            "prompts": ["red circle above blue square"],
        },
        "ablate": {"checkpoint": str(nano_ckpt), "interventions": ["zero-head 0.0"]},
        "variance": {"checkpoint": str(nano_ckpt)},
        "synopsis": {"checkpoint": str(nano_ckpt)},
        "screen": {"checkpoint": str(nano_ckpt)},
        "train": {"out": str(tmp_path / "run"), "preset": "nano"},
    }[kind]
    k = get_kind(kind)
    assert (
        k.check({**base, "cache": str(tmp_path)} if kind not in ("sample", "train") else base)[
            "device"
        ]
        == "auto"
    )
    ok = k.check({**base, "device": "CUDA:1"})
    assert ok["device"] == "cuda:1"  # spelling only: whether it exists is the worker's business
    with pytest.raises(UserError, match="unknown device"):
        k.check({**base, "device": "gpu0"})


def test_status_bar_shows_the_engines_device():
    from workbench.components.status import StatusBar

    bar = StatusBar()
    bar.connected = True
    bar.health = {"version": "0.1.0", "state": "ready", "device": {"device": "cuda:0"}}
    assert "on cuda:0" in bar.right_text().plain
    bar.health = {"version": "0.1.0", "state": "ready", "device": None}
    assert " on " not in bar.right_text().plain


def test_device_module_prints_what_auto_resolves_to():
    import json
    import subprocess

    r = subprocess.run(
        [sys.executable, "-m", "engine.core.device"], capture_output=True, text=True, check=True
    )
    assert json.loads(r.stdout) == describe("auto")


# --- CUDA only ------------------------------------------------------------------------------


@gpu
@needs_cuda
def test_gpu_sampling_runs_on_cuda_and_repeats_exactly(nano_ckpt):
    from engine.core.sampling import SamplingSettings
    from engine.model.checkpoint import load_checkpoint
    from engine.model.sampler import sample_images

    ck = load_checkpoint(nano_ckpt, device="cuda")
    assert next(ck.transformer.parameters()).is_cuda
    texts, seeds, four = ["red circle above blue square"] * 4, [0, 1, 2, 3], SamplingSettings(4)
    a = sample_images(ck, texts, seeds, four)
    b = sample_images(ck, texts, seeds, four)
    assert torch.equal(a, b)  # same device and seed: same images
    cpu = sample_images(load_checkpoint(nano_ckpt, device="cpu"), texts, seeds, four)
    # bf16 on the GPU vs float32 on the CPU: close, not equal
    assert (a.float() - cpu.float()).abs().mean() < 8


@gpu
@needs_cuda
def test_gpu_bad_index_is_a_clear_error():
    with pytest.raises(UserError, match="does not exist"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
