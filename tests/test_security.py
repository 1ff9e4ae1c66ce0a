"""Nothing the workbench loads can run code: no pickle on any loading path.

A checkpoint, run folder or cache may come from another user of a shared server. Weights,
optimizer state and caches are safetensors, JSON and HDF5 only; ruff's banned-api list in
pyproject.toml refuses every way Python has of unpickling, this file checks that the list holds
and the code passes it, and that a planted pickle is refused rather than loaded.
(Socket and folder modes, TCP tokens and names escaping the cache are tested with the engine in
tests/test_engine_server.py; docs/reliability.md lists them all.)
"""

from __future__ import annotations

import ast
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    p for d in ("engine", "workbench", "scripts", "benchmarks") for p in (ROOT / d).rglob("*.py")
)


def test_sources_exist():
    assert len(SOURCES) > 50  # the glob really found the project


def test_ruff_bans_every_way_of_unpickling(tmp_path):
    """pyproject.toml's banned-api list (ruff TID251) holds the stdlib's unpicklers, torch's
    loader (pickle even with weights_only) and the libraries built on pickle: a planted module
    using each is refused, and the project's own code passes."""
    planted = tmp_path / "planted.py"
    planted.write_text(
        "import pickle\nimport _pickle\nimport marshal\nimport shelve\nfrom dill import loads\n"
        "import cloudpickle\nimport joblib\nimport torch\nimport pandas as pd\n\n"
        "torch.load('w.pt')\npd.read_pickle('t.pkl')\n"
    )

    def ruff(*paths) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--no-cache", "--config",
             str(ROOT / "pyproject.toml"), "--select", "TID251", "--output-format", "concise",
             *map(str, paths)],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip

    r = ruff(planted)
    banned = {ln.split("`")[1] for ln in r.stdout.splitlines() if "TID251" in ln}
    assert banned == {"pickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib",
                      "torch.load", "pandas.read_pickle"}, r.stdout + r.stderr  # fmt: skip
    r = ruff("engine", "workbench", "scripts", "benchmarks")
    assert r.returncode == 0, "pickle on a loading path:\n" + r.stdout + r.stderr


def test_numpy_never_loads_pickles():
    # np.load refuses pickled arrays unless told otherwise; no ruff rule sees the keyword
    hits = [
        f"{p.relative_to(ROOT)}:{node.lineno}"
        for p in SOURCES
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.keyword) and node.arg == "allow_pickle"
        and not (isinstance(node.value, ast.Constant) and node.value.value is False)
    ]  # fmt: skip
    assert not hits, hits


def test_weight_loaders_are_told_safetensors_only():
    # from_pretrained falls back to a pickled *.bin when no safetensors file is there, unless
    # told not to; tokenizers and configs hold no tensors and are exempt.
    calls = []
    for p in SOURCES:
        for node in ast.walk(ast.parse(p.read_text())):
            f = node.func if isinstance(node, ast.Call) else None
            if isinstance(f, ast.Attribute) and f.attr == "from_pretrained":
                owner = ast.unparse(f.value)
                if owner not in ("AutoTokenizer", "AutoConfig", "T5TokenizerFast", "T5Tokenizer"):
                    kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                    calls.append((f"{p.relative_to(ROOT)}:{node.lineno} {owner}", kw))
    assert len(calls) >= 4, calls  # transformer, VAE, MiniLM, T5: the walk is not stale
    bad = [c for c, kw in calls if kw.get("use_safetensors") != "True"]
    assert not bad, bad


class _Planted:
    """Unpickling this writes a file: proof that the pickle ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pickle ran"))


def test_a_planted_pickle_in_a_checkpoint_is_refused_not_run(nano_ckpt, tmp_path):
    from engine.model.checkpoint import load_checkpoint, resolve_checkpoint_dir

    ck = tmp_path / "ckpt"
    shutil.copytree(resolve_checkpoint_dir(nano_ckpt), ck)
    marker = tmp_path / "ran"
    weights = ck / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    (ck / "transformer" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(_Planted(marker)))
    with pytest.raises(UserError):
        load_checkpoint(ck)
    with pytest.raises(UserError):
        load_checkpoint(ck, verify_hash=False)
    assert not marker.exists()


def test_a_planted_pickled_optimizer_is_refused_not_run(nano_ckpt, tmp_path):
    from engine.model.checkpoint import resolve_checkpoint_dir
    from engine.train.state import load_optimizer_state

    state = tmp_path / "train_state"
    shutil.copytree(resolve_checkpoint_dir(nano_ckpt) / "train_state", state)
    marker = tmp_path / "ran"
    (state / "optimizer.safetensors").unlink()
    (state / "optimizer.pt").write_bytes(pickle.dumps(_Planted(marker)))
    with pytest.raises(UserError, match="init-from"):
        load_optimizer_state(state)
    assert not marker.exists()
