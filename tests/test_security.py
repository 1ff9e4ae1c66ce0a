"""Nothing the workbench loads can run code: no pickle on any loading path.

A checkpoint, run folder or cache may come from another user of a shared server. Weights,
optimizer state and caches are safetensors, JSON and HDF5 only; this file checks the source for
every way Python has of unpickling, and that a planted pickle is refused rather than loaded.
(Socket and folder modes, TCP tokens and names escaping the cache are tested with the engine in
tests/test_engine_server.py; docs/reliability.md lists them all.)
"""

from __future__ import annotations

import ast
import pickle
import re
import shutil
from pathlib import Path

import pytest

from engine.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    p for d in ("engine", "workbench", "scripts", "benchmarks") for p in (ROOT / d).rglob("*.py")
)

# Every spelling of "unpickle this": the stdlib, numpy's opt-in, torch's loader (pickle even
# with weights_only), and the libraries built on pickle.
FORBIDDEN = [
    r"\bimport\s+(c?pickle|dill|cloudpickle|joblib|shelve|marshal)\b",
    r"\bfrom\s+(c?pickle|dill|cloudpickle|joblib|shelve|marshal)\s+import\b",
    r"\btorch\.load\s*\(",
    r"\ballow_pickle\s*=\s*True",
    r"\bpd\.read_pickle\b",
]


def test_sources_exist():
    assert len(SOURCES) > 50  # the glob really found the project


@pytest.mark.parametrize("pattern", FORBIDDEN)
def test_no_unpickling_anywhere_in_the_code(pattern):
    hits = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in SOURCES
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(pattern, line) and not line.lstrip().startswith("#")
    ]
    assert not hits, "pickle on a loading path:\n" + "\n".join(hits)


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
