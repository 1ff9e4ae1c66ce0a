"""Bad input, everywhere: a table of wrong paths, damaged checkpoints, bad prompts, specs and
counts, foreign caches, a full disk, unwritable exports and ctrl+c, run against every CLI command
and engine endpoint.

Each must give one line naming the problem (``error: ...`` on stderr and a non-zero exit, or a
4xx with a JSON error from the engine), no traceback, and leave every file of the checkpoint and
the cache byte-identical (`tree_digest` before and after).

The CLI runs in-process (`workbench.cli.main` with patched argv) to keep the table fast; a few
cases, and ctrl+c, run as real subprocesses to show that nothing else reaches the terminal.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import pytest
from clirunner import cli_subprocess, run_cli
from contract import one_line_error, tree_digest
from engine_process import Engine, short_tmp, wait_until

GOOD = ["red square is above blue circle", "circle is to the left of blue triangle"]
LONG = " ".join(["the"] * 16) + " red square above blue circle"  # 21 words: parses, too long


# --- helpers --------------------------------------------------------------------------------


@dataclass
class World:
    d: Path
    ckpt: Path  # a training run folder: step-0000003/ and `latest`
    cache: Path  # its HDF5 cache (a synopsis run and a screening run)
    foreign: Path  # a cache folder whose file claims another checkpoint
    corrupt: Path  # a cache folder whose file is not HDF5
    bad: Path  # damaged checkpoints, one per folder
    prompts: Path  # prompt files
    out: Path  # where outputs would go: nothing may appear there

    @property
    def protected(self) -> list[Path]:
        return [self.ckpt, self.cache, self.foreign, self.corrupt]

    def fmt(self, value):
        """`value` with "{field}" placeholders replaced by this world's paths (in nested
        dicts and lists too)."""
        if isinstance(value, dict):
            return {k: self.fmt(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fmt(v) for v in value]
        if not isinstance(value, str):
            return value
        for k, v in vars(self).items():
            value = value.replace(f"{{{k}}}", str(v))
        return value


# --- the shared checkpoint, cache and damaged copies (built once) ----------------------------


def _copy_checkpoint(src: Path, dst: Path) -> Path:
    """A checkpoint folder without train_state/ (the optimiser; no command reads it)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("train_state"))
    return dst


def _damaged_checkpoints(step: Path, bad: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file
    from safetensors.torch import load_file
    from safetensors.torch import save_file as save_torch

    from engine.model.checkpoint import WEIGHTS, sha256_file
    from engine.text import build_text_encoder

    def rehash(d: Path) -> None:
        meta = json.loads((d / "workbench.json").read_text())
        meta["hashes"]["transformer"] = sha256_file(d / "transformer" / WEIGHTS)
        (d / "workbench.json").write_text(json.dumps(meta))

    w = _copy_checkpoint(step, bad / "truncated") / "transformer" / WEIGHTS
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    w = _copy_checkpoint(step, bad / "replaced") / "transformer" / WEIGHTS
    data = bytearray(w.read_bytes())
    data[-64] ^= 0xFF  # same size, one byte off: only the hash tells
    w.write_bytes(bytes(data))
    d = _copy_checkpoint(step, bad / "wrong_tensors")
    save_file({"w": np.zeros((4, 5), np.float32)}, str(d / "transformer" / WEIGHTS))
    rehash(d)  # a consistent workbench.json: only the tensors are wrong
    d = _copy_checkpoint(step, bad / "wrong_shape")
    sd = load_file(str(d / "transformer" / WEIGHTS))
    sd["proj_out.weight"] = sd["proj_out.weight"][:, :-1].contiguous()
    save_torch(sd, str(d / "transformer" / WEIGHTS))
    rehash(d)
    d = _copy_checkpoint(step, bad / "wrong_encoder")
    shutil.rmtree(d / "text_encoder")
    build_text_encoder("rte:256").save(d)  # 256-d words for a 384-d transformer
    d = _copy_checkpoint(step, bad / "no_encoder")
    shutil.rmtree(d / "text_encoder")
    # issue 20: configs read from disk are validated where they are read
    d = _copy_checkpoint(step, bad / "config_list")
    (d / "transformer" / "config.json").write_text("[1, 2]")
    d = _copy_checkpoint(step, bad / "huge_layers")
    cfg = json.loads((d / "transformer" / "config.json").read_text())
    (d / "transformer" / "config.json").write_text(json.dumps({**cfg, "num_layers": 100_000}))
    d = _copy_checkpoint(step, bad / "res_text")
    meta = json.loads((d / "workbench.json").read_text())
    (d / "workbench.json").write_text(json.dumps({**meta, "res": "32"}))
    for name, text in (
        ("bad_json", b"{not json"),
        ("binary_json", b"\xff\xfe{}"),
        ("list_json", b"[1, 2]"),
    ):
        (bad / name).mkdir()
        (bad / name / "workbench.json").write_bytes(text)
    meta = json.loads((step / "workbench.json").read_text())
    del meta["hashes"]
    (bad / "no_hash").mkdir()
    (bad / "no_hash" / "workbench.json").write_text(json.dumps(meta))
    (bad / "not_ckpt").mkdir()
    (bad / "not_ckpt" / "notes.txt").write_text("not a checkpoint\n")
    (bad / "a_file").write_text("not a folder\n")


@pytest.fixture(scope="module")
def world(nano_ckpt) -> World:
    d = short_tmp()
    step = (nano_ckpt / "latest").resolve()
    run = d / "roots" / "nano"
    run.mkdir(parents=True)
    _copy_checkpoint(step, run / step.name)
    (run / "latest").symlink_to(step.name)
    shutil.copy(nano_ckpt / "metrics.jsonl", run / "metrics.jsonl")
    w = World(d, run, d / "cache", d / "foreign", d / "corrupt", d / "bad", d / "prompts",
              d / "out")  # fmt: skip
    for p in (w.bad, w.prompts, w.out, d / "cwd"):
        p.mkdir()
    (w.prompts / "good.txt").write_text("\n".join(GOOD) + "\n")
    (w.prompts / "empty.txt").write_text("")
    (w.prompts / "comments.txt").write_text("# only a comment\n\n")
    (w.prompts / "unknown.txt").write_text(f"{GOOD[0]}\nred square above blue elephant\n")
    (w.prompts / "long.txt").write_text(f"{GOOD[0]}\n{LONG}\n")
    (w.prompts / "binary.txt").write_bytes(b"\xff\xfe red square above blue circle\n")
    (w.prompts / "cache_file").write_text("a file where a cache folder should be\n")
    (w.out / "metadata_binary").mkdir()
    (w.out / "metadata_binary" / "metadata.jsonl").write_bytes(b"\xff\xff\n")
    _damaged_checkpoints(step, w.bad)
    (d / "link_out").symlink_to(w.out / "metadata_binary")  # an image folder, behind a link
    os.mkfifo(w.prompts / "fifo")
    (w.prompts / "read_only.csv").write_text("an earlier export\n")
    (w.prompts / "read_only.csv").chmod(0o444)

    # The cache: a synopsis and a screening, written by the CLI itself.
    mp = pytest.MonkeyPatch()
    try:
        mp.chdir(d / "cwd")
        for args in (
            ["synopsis", run, "--prompts", w.prompts / "good.txt", "--n-per-prompt", "1",
             "--steps", "2", "--batch-size", "2", "--detail", "1", "--cache", w.cache],
            ["screen", run, "--cache", w.cache, "--top", "1"],
        ):  # fmt: skip
            mp.setattr(sys, "argv", ["dit-workbench", *map(str, args)])
            from workbench.cli import main

            try:
                main()
            except SystemExit as e:
                assert not e.code, f"{args[0]} failed building the test cache"
    finally:
        mp.undo()
    (h5,) = w.cache.glob("*.h5")
    for folder in (w.foreign, w.corrupt):
        folder.mkdir()
    shutil.copy(h5, w.foreign / h5.name)
    with h5py.File(w.foreign / h5.name, "a") as f:
        f.attrs["checkpoint_hash"] = "f" * 64  # written for another checkpoint
    (w.corrupt / h5.name).write_bytes(os.urandom(4096))
    yield w
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def cli(world, capsys, monkeypatch):
    """Run the CLI in-process from an empty directory (so no default ./cache is touched)."""
    monkeypatch.chdir(world.d / "cwd")
    monkeypatch.setenv("DIT_WORKBENCH_CACHE", str(world.d / "cwd" / "cache"))

    def run(*args) -> tuple[int, str, str]:
        return run_cli([world.fmt(str(a)) for a in args], capsys, monkeypatch)

    return run


# --- the CLI table --------------------------------------------------------------------------

S = "red square above blue circle"
CLI_CASES = [
    # id, argv (formatted with World's fields), expected part of the message
    # missing, unreadable and wrong paths
    ("missing-checkpoint", ["info", "{d}/nope"], "does not exist"),
    ("checkpoint-is-a-file", ["sample", "{bad}/a_file", "--out", "{out}/s", "--prompt", S],
     "is not a folder"),
    ("folder-not-a-checkpoint", ["screen", "{bad}/not_ckpt", "--cache", "{cache}"],
     "not a dit-workbench checkpoint"),
    ("missing-prompts-file", ["synopsis", "{ckpt}", "--prompts", "{prompts}/nope.txt",
                              "--cache", "{cache}"], "does not exist"),
    ("prompts-file-is-a-folder", ["ablate", "{ckpt}", "-i", "mask-head 0.0", "--prompts",
                                  "{prompts}", "--cache", "{cache}"], "is a folder"),
    ("prompts-file-not-text", ["variance", "{ckpt}", "--prompts", "{prompts}/binary.txt",
                               "--cache", "{cache}"], "not UTF-8"),
    ("missing-image-folder", ["evaluate", "{d}/nope"], "does not exist"),
    ("image-folder-without-metadata", ["evaluate", "{bad}/not_ckpt"], "no metadata.jsonl"),
    ("metadata-not-text", ["evaluate", "{out}/metadata_binary"], "not UTF-8"),
    ("missing-run-folder", ["curves", "{d}/nope"], "does not exist"),
    # damaged checkpoints
    ("truncated-weights-sample", ["sample", "{bad}/truncated", "--out", "{out}/s", "--prompt", S],
     "does not match the hash"),
    ("truncated-weights-info", ["info", "{bad}/truncated"], "the checkpoint is damaged"),
    ("truncated-weights-report", ["report", "{bad}/truncated", "--cache", "{cache}"],
     "the checkpoint is damaged"),
    ("replaced-weights", ["synopsis", "{bad}/replaced", "--prompts", "{prompts}/good.txt",
                          "--cache", "{cache}"], "does not match the hash"),
    ("weights-without-the-model-tensors", ["sample", "{bad}/wrong_tensors", "--out", "{out}/s",
                                           "--prompt", S], "tensors transformer/config.json"),
    ("weights-of-the-wrong-shape", ["screen", "{bad}/wrong_shape", "--cache", "{cache}"],
     "expected shape"),
    ("wrong-encoder-width", ["variance", "{bad}/wrong_encoder", "--cache", "{cache}"],
     "256-d embeddings"),
    ("no-text-encoder", ["ablate", "{bad}/no_encoder", "-i", "mask-head 0.0", "--cache",
                         "{cache}"], "no text_encoder/config.json"),
    ("metadata-not-json", ["heads", "{bad}/bad_json", "--cache", "{cache}"], "not valid JSON"),
    ("metadata-not-utf8", ["info", "{bad}/binary_json"], "not UTF-8"),
    ("metadata-not-an-object", ["screen", "{bad}/list_json"], "not a JSON object"),
    ("metadata-without-hash", ["heads", "{bad}/no_hash", "--cache", "{cache}"],
     "no transformer hash"),
    ("unknown-text-encoder", ["train", "--out", "{out}/t", "--preset", "nano", "--text", "t6"],
     "unknown text encoder 't6'"),
    # prompts
    ("unknown-word", ["sample", "{ckpt}", "--out", "{out}/s", "--prompt",
                      "red square above blue elephant"], "cannot read prompt"),
    ("unknown-word-in-file", ["synopsis", "{ckpt}", "--prompts", "{prompts}/unknown.txt",
                              "--cache", "{cache}"], "unknown.txt:2"),
    ("unknown-word-in-intervention", ["ablate", "{ckpt}", "-i", "swap-words above=elephant",
                                      "--prompts", "{prompts}/good.txt", "--n", "1", "--steps",
                                      "1", "--cache", "{cache}"], "'elephant'"),
    ("prompt-over-20-tokens", ["sample", "{ckpt}", "--out", "{out}/s", "--prompt", LONG],
     "more than the 20"),
    ("prompt-file-over-20-tokens", ["synopsis", "{ckpt}", "--prompts", "{prompts}/long.txt",
                                    "--cache", "{cache}"], "more than the 20"),
    ("empty-prompts-file", ["sample", "{ckpt}", "--out", "{out}/s", "--prompts-file",
                            "{prompts}/empty.txt"], "has no captions"),
    ("comments-only-prompts-file", ["synopsis", "{ckpt}", "--prompts", "{prompts}/comments.txt",
                                    "--cache", "{cache}"], "has no captions"),
    # heads out of range, malformed specs and queries
    ("map-head-out-of-range", ["screen", "{ckpt}", "--cache", "{cache}", "--map", "9.9"],
     "head 9.9 is not in this model"),
    ("ablate-head-out-of-range", ["ablate", "{ckpt}", "-i", "mask-head 3.0", "--cache",
                                  "{cache}"], "head 3.0 is not in this model"),
    ("unknown-intervention", ["ablate", "{ckpt}", "-i", "frob 0.0", "--cache", "{cache}"],
     "unknown intervention 'frob'"),
    ("unclosed-quote", ["ablate", "{ckpt}", "-i", "embed-add '+above -below", "--cache",
                        "{cache}"], "unclosed quote"),
    ("sweep-without-wildcard", ["ablate", "{ckpt}", "--sweep", "mask-head 0.0", "--cache",
                                "{cache}"], "exactly one head written with '*'"),
    ("spec-steps-beyond-sampling", ["ablate", "{ckpt}", "-i", "mask-head 0.0 steps=0-40",
                                    "--steps", "2", "--cache", "{cache}"], "names step 40"),
    ("unknown-token-category", ["ablate", "{ckpt}", "-i", "mask-head 0.0 tokens=sky", "--cache",
                                "{cache}"], "unknown token category 'sky'"),
    ("unknown-query", ["heads", "{ckpt}", "--cache", "{cache}", "--query", "relation->sky"],
     "unknown query"),
    ("heads-steps-outside-run", ["heads", "{ckpt}", "--cache", "{cache}", "--steps", "0-99"],
     "outside the run's steps"),
    ("unknown-synopsis-run", ["heads", "{ckpt}", "--cache", "{cache}", "--run", "nope"],
     "no synopsis run 'nope'"),
    ("unknown-relation", ["screen", "{ckpt}", "--cache", "{cache}", "-r", "sideways"],
     "unknown relation"),
    ("unknown-metric", ["ablate", "{ckpt}", "--list", "--metric", "accuracy", "--cache",
                        "{cache}"], "unknown metric 'accuracy'"),
    ("unknown-device", ["ablate", "{ckpt}", "-i", "mask-head 0.0", "--device", "tpu",
                        "--no-cache"], "unknown device 'tpu'"),
    # negative or zero counts
    ("zero-images", ["sample", "{ckpt}", "--out", "{out}/s", "--prompt", S, "--n", "0"],
     "--n must be positive"),
    ("zero-steps", ["sample", "{ckpt}", "--out", "{out}/s", "--prompt", S, "--steps", "0"],
     "--steps must be positive"),
    ("negative-samples", ["ablate", "{ckpt}", "-i", "mask-head 0.0", "--n", "-4", "--cache",
                          "{cache}"], "--n must be positive"),
    ("zero-resamples", ["ablate", "{ckpt}", "-i", "mask-head 0.0", "--resamples", "0",
                        "--cache", "{cache}"], "--resamples must be positive"),
    ("zero-seeds-per-prompt", ["synopsis", "{ckpt}", "--prompts", "{prompts}/good.txt",
                               "--n-per-prompt", "0", "--cache", "{cache}"], "must be positive"),
    ("negative-detail", ["synopsis", "{ckpt}", "--prompts", "{prompts}/good.txt", "--detail",
                         "-1", "--cache", "{cache}"], "--detail must be >= 0"),
    ("negative-top", ["heads", "{ckpt}", "--cache", "{cache}", "--top", "-2"],
     "--top must be positive"),
    ("zero-k", ["screen", "{ckpt}", "--cache", "{cache}", "--compare", "--k", "0"],
     "--k must be at least 1"),
    ("zero-scenes", ["dataset", "render", "{out}/data", "--n", "0"], "--n must be positive"),
    ("zero-train-steps", ["train", "--out", "{out}/t", "--preset", "nano", "--steps", "0"],
     "--steps must be positive"),
    # caches
    ("cache-of-another-checkpoint", ["heads", "{ckpt}", "--cache", "{foreign}"],
     "the cache of another checkpoint"),
    ("write-into-cache-of-another-checkpoint", ["screen", "{ckpt}", "--cache", "{foreign}",
                                                "--recompute"], "the cache of another checkpoint"),
    ("list-cache-of-another-checkpoint", ["ablate", "{ckpt}", "--list", "--cache", "{foreign}"],
     "the cache of another checkpoint"),
    ("cache-not-hdf5", ["heads", "{ckpt}", "--cache", "{corrupt}"], "cannot read cache"),
    ("cache-folder-is-a-file", ["synopsis", "{ckpt}", "--prompts", "{prompts}/good.txt",
                                "--cache", "{prompts}/cache_file"], "is a file"),
    # exports
    ("csv-into-missing-folder", ["heads", "{ckpt}", "--cache", "{cache}", "--format", "csv",
                                 "--out", "{d}/nope/heads.csv"], "does not exist"),
    ("csv-onto-a-folder", ["screen", "{ckpt}", "--cache", "{cache}", "--format", "csv", "--out",
                           "{out}"], "it is a folder"),
    ("curves-csv-into-missing-folder", ["curves", "{ckpt}", "--format", "csv", "--out",
                                        "{d}/nope/c.csv"], "does not exist"),
    ("report-into-missing-folder", ["report", "{ckpt}", "--cache", "{cache}", "--out",
                                    "{d}/nope/r.md"], "does not exist"),
    # usage errors: one line too, not click's box or a traceback
    ("bad-format-choice", ["heads", "{ckpt}", "--format", "xml"], "Invalid value for '--format'"),
    ("count-not-a-number", ["ablate", "{ckpt}", "--n", "many"], "Invalid value for '--n'"),
    ("missing-argument", ["info"], "Missing argument"),
    ("missing-option", ["sample", "{ckpt}", "--prompt", S], "Missing option '--out'"),
    ("unknown-command", ["frobnicate"], "No such command"),
    ("job-id-not-a-number", ["jobs", "show", "one"], "Invalid value for 'JOB_ID'"),
    # engine commands that refuse before starting anything
    ("params-json-not-an-object", ["jobs", "submit", "selftest", "--params-json", "[1]"],
     "must be a JSON object"),
    ("param-not-key-value", ["jobs", "submit", "selftest", "-p", "seconds"], "not KEY=VALUE"),
    ("bad-tcp-address", ["serve", "--tcp", "everywhere", "--cache", "{out}/engine"],
     "is not HOST:PORT"),
    ("tui-without-terminal", ["tui"], "needs a terminal"),
    # issue 20: non-finite and out-of-range numbers, checked before any model loads
    ("sample-cfg-nan", ["sample", "{ckpt}", "--out", "{out}/s", "--prompt", S, "--cfg", "nan"],
     "--cfg must be a finite number"),
    ("sample-cfg-inf", ["sample", "{ckpt}", "--out", "{out}/s", "--prompt", S, "--cfg", "inf"],
     "--cfg must be a finite number"),
    ("sample-negative-cfg", ["sample", "{ckpt}", "--out", "{out}/s", "--prompt", S, "--cfg",
                             "-1"], "--cfg must be >= 0"),
    ("sample-a-billion-images", ["sample", "{ckpt}", "--out", "{out}/s", "--prompt", S, "--n",
                                 "1000000000"], "--n must be at most 1,000,000"),
    ("sample-images-times-prompts", ["sample", "{ckpt}", "--out", "{out}/s", "--eval-set",
                                     "--n", "5000"], "is over the limit of 1,000,000"),
    ("sample-seed-over-int64", ["sample", "{ckpt}", "--out", "{out}/s", "--prompt", S, "--seed",
                                str(2**63)], "does not fit a 64-bit integer"),
    ("sample-steps-over-schedule", ["sample", "{ckpt}", "--out", "{out}/s", "--prompt", S,
                                    "--steps", "5000"], "the schedule has 1000 steps"),
    ("synopsis-seed-too-large", ["synopsis", "{ckpt}", "--prompts", "{prompts}/good.txt",
                                 "--seed", str(2**62 + 1), "--cache", "{cache}"],
     "seeds are stored as 64-bit integers"),
    ("synopsis-cfg-nan", ["synopsis", "{ckpt}", "--prompts", "{prompts}/good.txt", "--cfg",
                          "nan", "--cache", "{cache}"], "--cfg must be a finite number"),
    ("ablate-negative-seed", ["ablate", "{ckpt}", "-i", "mask-head 0.0", "--seed", "-3",
                              "--cache", "{cache}"], "--seed must be >= 0"),
    ("ablate-cfg-inf", ["ablate", "{ckpt}", "-i", "mask-head 0.0", "--cfg", "inf", "--cache",
                        "{cache}"], "--cfg must be a finite number"),
    ("train-weight-decay-nan", ["train", "--out", "{out}/t", "--preset", "nano",
                                "--weight-decay", "nan"], "--weight-decay must be a finite"),
    ("train-lr-inf", ["train", "--out", "{out}/t", "--preset", "nano", "--lr", "inf"],
     "--lr must be a finite number"),
    ("sample-overwrite-onto-symlink", ["sample", "{ckpt}", "--out", "{d}/link_out", "--prompt",
                                      S, "--overwrite"], "is a symlink"),
    ("export-onto-symlink", ["export", "{ckpt}", "--out", "{d}/link_out"], "exists"),
    ("csv-onto-a-fifo", ["heads", "{ckpt}", "--cache", "{cache}", "--format", "csv", "--out",
                         "{prompts}/fifo"], "is a FIFO, not a regular file"),
    ("csv-onto-a-read-only-file", ["curves", "{ckpt}", "--format", "csv", "--out",
                                   "{prompts}/read_only.csv"], "the file is read-only"),
    ("transformer-config-not-a-mapping", ["info", "{bad}/config_list"], "is not a JSON object"),
    ("transformer-config-100000-layers", ["screen", "{bad}/huge_layers", "--cache", "{cache}"],
     "layers must be an integer from 1 to 256"),
    ("workbench-json-wrong-type", ["sample", "{bad}/res_text", "--out", "{out}/s", "--prompt", S],
     "'res' is '32', not an integer"),
    ("prompts-file-is-a-fifo", ["sample", "{ckpt}", "--out", "{out}/s", "--prompts-file",
                                "{prompts}/fifo"], "is a FIFO, not a regular file"),
    ("prompts-file-is-dev-zero", ["synopsis", "{ckpt}", "--prompts", "/dev/zero", "--cache",
                                  "{cache}"], "is a device or socket"),
    ("megabyte-caption-echo-cut", ["sample", "{ckpt}", "--out", "{out}/s", "--prompt",
                                   "red " * 250_000], "characters in all"),
    ("render-size-100000", ["dataset", "render", "{out}/data", "--n", "2", "--size", "100000"],
     "--size must be at most 2048"),
    ("curves-threshold-nan", ["curves", "{ckpt}", "--threshold", "nan"],
     "--threshold must be a finite number"),
    ("curves-threshold-over-one", ["curves", "{ckpt}", "--threshold", "2"],
     "--threshold must be at most 1 (got 2.0)"),
    ("train-seed-over-int64", ["train", "--out", "{out}/t", "--preset", "nano", "--seed",
                               str(2**64)], "does not fit a 64-bit integer"),
]  # fmt: skip


@pytest.mark.parametrize("args, expect", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(world, cli, args, expect):
    extra = [p for p in (Path(world.fmt(a)) for a in args) if str(p).startswith(str(world.bad))]
    before = tree_digest(*world.protected, world.out, *extra)
    code, out, err = cli(*args)
    line = one_line_error(err)
    assert code == 2, (code, err)
    assert expect in line, line
    assert "Traceback" not in out
    assert tree_digest(*world.protected, world.out, *extra) == before


def test_the_table_is_big_enough():
    assert len(CLI_CASES) + len(ENGINE_CASES) >= 30
    commands = {c[1][0] for c in CLI_CASES}
    assert commands >= {"dataset", "evaluate", "train", "sample", "info", "serve", "jobs",
                        "curves", "synopsis", "heads", "report", "tui", "ablate", "variance",
                        "screen"}  # fmt: skip


# --- real processes: nothing but the one line reaches the terminal (slow: each process starts
# an interpreter and imports torch) ------------------------------------------------------------


@pytest.mark.slow
def test_cli_subprocesses_print_one_line(world):
    cases = [
        (["heads", world.ckpt, "--format", "xml"], "Invalid value for '--format'"),
        # diffusers would print many lines of warnings about the missing tensors first
        (["sample", world.bad / "wrong_tensors", "--out", world.out / "s", "--prompt", S],
         "tensors transformer/config.json"),
        (["info", world.bad / "truncated"], "the checkpoint is damaged"),
    ]  # fmt: skip
    before = tree_digest(*world.protected, world.out, world.bad)
    procs = [(cli_subprocess(args, world.d / "cwd"), expect) for args, expect in cases]
    for p, expect in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 2, err
        assert expect in one_line_error(err)
        assert "Traceback" not in out
    assert tree_digest(*world.protected, world.out, world.bad) == before


@pytest.mark.slow
def test_ctrl_c_while_sampling(world):
    """SIGINT mid-sampling: exit 130, one line, no image folder (not even a partial one)."""
    before = tree_digest(*world.protected, world.out)
    out = world.out / "interrupted"
    partial = world.out / f".{out.name}.partial"
    p = cli_subprocess(["sample", world.ckpt, "--out", out, "--eval-set", "--n", "2"],
                       world.d / "cwd")  # fmt: skip
    try:
        # The staging folder appears once the model is loaded and sampling has begun; sampling
        # 528 images then takes minutes, so the signal lands while it works.
        wait_until(lambda: p.poll() is not None or partial.is_dir(), 120, "sampling to start")
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGINT)
        stdout, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, (err, stdout[-300:])  # 0 with "wrote": SIGINT was ignored
    assert err.strip() == "interrupted; nothing half-written was kept", err
    assert "Traceback" not in stdout
    assert not out.exists() and not partial.exists()
    assert tree_digest(*world.protected, world.out) == before


# --- a full disk and an unwritable folder -----------------------------------------------------


def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_while_storing_a_run(world, cli, monkeypatch):
    """The cache is written as a copy that replaces it: a full disk leaves the old file."""
    import engine.store.cache

    before = tree_digest(*world.protected)
    monkeypatch.setattr(engine.store.cache.shutil, "copyfile", _enospc)
    code, _, err = cli("screen", "{ckpt}", "--cache", "{cache}", "--recompute")
    assert code == 2 and "No space left on device" in one_line_error(err)
    assert tree_digest(*world.protected) == before


def test_full_disk_while_writing_a_new_cache(world, cli, monkeypatch):
    import engine.store.h5

    fresh = world.d / "fresh-cache"
    monkeypatch.setattr(engine.store.h5, "write_dataset", _enospc)
    code, _, err = cli("screen", "{ckpt}", "--cache", fresh)
    assert code == 2 and "No space left on device" in one_line_error(err)
    left = sorted(p.name for p in fresh.iterdir()) if fresh.exists() else []
    assert not [n for n in left if not n.endswith(".lock")], left  # no .h5, no temp file


def test_full_disk_while_exporting_csv(world, cli, monkeypatch):
    """An export replaces its file whole or not at all: a full disk keeps the old one."""
    import workbench.output

    target = world.out / "heads.csv"
    target.write_text("the previous export\n")
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, fd, *a, **k):
            self.f = real_fdopen(fd, *a, **k)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            _enospc()

    try:
        before = tree_digest(*world.protected, world.out)
        monkeypatch.setattr(workbench.output.os, "fdopen", Full)
        code, _, err = cli("heads", "{ckpt}", "--cache", "{cache}", "--format", "csv", "--out",
                           target)  # fmt: skip
        assert code == 2 and "No space left on device" in one_line_error(err)
        assert tree_digest(*world.protected, world.out) == before  # old file, no temp file
    finally:
        target.unlink()


@pytest.mark.parametrize(
    "args, locked, expect",
    [
        (["sample", "{ckpt}", "--out", "{out}/s", "--prompts-file", "{d}/locked/p.txt"],
         "p.txt", "cannot read prompts file"),
        (["info", "{d}/locked"], "workbench.json", "cannot read"),
        (["evaluate", "{d}/locked"], "metadata.jsonl", "cannot read"),
    ],
    ids=["prompts-file", "checkpoint-metadata", "image-metadata"],
)  # fmt: skip
def test_unreadable_file(world, cli, monkeypatch, args, locked, expect):
    """A file the user may not read. As root, permission bits are not enforced, so the
    kernel's answer (EACCES on reading it) is simulated."""
    folder = world.d / "locked"
    folder.mkdir()
    target = folder / locked
    target.write_text("{}\n" if locked != "p.txt" else f"{S}\n")
    target.chmod(0)
    try:
        if os.access(target, os.R_OK):  # root
            real = Path.read_text

            def read_text(self, *a, **k):
                if self == target:
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
                return real(self, *a, **k)

            monkeypatch.setattr(Path, "read_text", read_text)
        before = tree_digest(*world.protected, world.out)
        code, _, err = cli(*args)
        assert code == 2 and expect in one_line_error(err)
        assert tree_digest(*world.protected, world.out) == before
    finally:
        shutil.rmtree(folder)


@pytest.fixture
def read_only_dir(world, monkeypatch):
    """A folder nobody may write in. As root, permission bits are not enforced, so the kernel's
    answer (EACCES on creating a file there) is simulated."""
    ro = world.d / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # root
        real_open = os.open

        def guarded_open(path, flags, *a, **k):
            if Path(path).parent == ro and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, flags, *a, **k)

        monkeypatch.setattr(os, "open", guarded_open)
    yield ro
    ro.chmod(0o755)
    shutil.rmtree(ro)


@pytest.mark.parametrize(
    "args",
    [
        ["heads", "{ckpt}", "--cache", "{cache}", "--format", "csv"],
        ["ablate", "{ckpt}", "--list", "--cache", "{cache}", "--format", "csv"],
        ["curves", "{ckpt}", "--format", "csv"],
    ],
    ids=["heads", "ablate-list", "curves"],
)
def test_csv_export_into_read_only_folder(world, cli, read_only_dir, args):
    before = tree_digest(*world.protected, read_only_dir)
    code, _, err = cli(*args, "--out", read_only_dir / "export.csv")
    assert code == 2 and "cannot write" in one_line_error(err)
    assert tree_digest(*world.protected, read_only_dir) == before


# --- the engine ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(world):
    ecache = world.d / "ecache"
    ecache.mkdir()
    for h5 in world.cache.glob("*.h5"):
        shutil.copy(h5, ecache / h5.name)
    e = Engine(ecache, "--checkpoints", str(world.ckpt.parent), "--checkpoints", str(world.bad))
    yield e
    e.stop()


def _engine_state(world, engine) -> dict:
    """The checkpoint, the engine's cache files and its job list (run/ holds the socket)."""
    files = {k: v for k, v in tree_digest(world.ckpt, engine.cache).items()
             if f"{os.sep}run{os.sep}" not in k}  # fmt: skip
    return {"files": files, "jobs": engine.http.get("/jobs").json()}


NANO = "{ckpt}"
ENGINE_CASES = [
    # id, method, path, JSON body (formatted), expected status, expected part of the error
    ("unknown-kind", "POST", "/jobs", {"kind": "paint", "params": {}}, 400, "unknown job kind"),
    ("body-not-json", "POST", "/jobs", b"{not json", 400, "not valid JSON"),
    ("unknown-field", "POST", "/jobs", {"kind": "selftest", "when": "now"}, 400,
     "unknown field 'when'"),
    ("param-wrong-type", "POST", "/jobs", {"kind": "selftest", "params": {"seconds": "soon"}},
     400, "must be a number"),
    ("missing-checkpoint", "POST", "/jobs", {"kind": "synopsis", "params": {"checkpoint": "nope"}},
     400, "not found"),
    ("checkpoint-name-escapes-roots", "POST", "/jobs",
     {"kind": "variance", "params": {"checkpoint": "../../nope"}}, 400, "'..'"),
    ("checkpoint-path-not-a-checkpoint", "POST", "/jobs",
     {"kind": "variance", "params": {"checkpoint": "/etc"}}, 400, "not a dit-workbench"),
    ("folder-not-a-checkpoint", "POST", "/jobs",
     {"kind": "screen", "params": {"checkpoint": "not_ckpt"}}, 400, "not a dit-workbench"),
    ("negative-seeds-per-prompt", "POST", "/jobs",
     {"kind": "synopsis", "params": {"checkpoint": NANO, "n_per_prompt": -1}}, 400,
     "must be positive"),
    ("zero-steps", "POST", "/jobs", {"kind": "synopsis", "params": {"checkpoint": NANO,
                                                                    "steps": 0}}, 400,
     "must be positive"),
    ("negative-detail", "POST", "/jobs",
     {"kind": "synopsis", "params": {"checkpoint": NANO, "detail": -1}}, 400, "'detail'"),
    ("unknown-word-prompts", "POST", "/jobs",
     {"kind": "synopsis", "params": {"checkpoint": NANO, "prompts": "unknown.txt"}}, 400,
     "unknown.txt:2"),
    ("prompts-over-20-tokens", "POST", "/jobs",
     {"kind": "synopsis", "params": {"checkpoint": NANO, "prompts": "long.txt"}}, 400,
     "more than the 20"),
    ("empty-prompts-file", "POST", "/jobs",
     {"kind": "ablate", "params": {"checkpoint": NANO, "prompts": "empty.txt",
                                   "interventions": ["mask-head 0.0"]}}, 400, "has no captions"),
    ("prompts-not-text", "POST", "/jobs",
     {"kind": "variance", "params": {"checkpoint": NANO, "prompts": "binary.txt"}}, 400,
     "not UTF-8"),
    ("cache-param-is-a-file", "POST", "/jobs",
     {"kind": "synopsis", "params": {"checkpoint": NANO, "cache": "cache_file"}}, 400,
     "is a file"),
    ("unknown-intervention", "POST", "/jobs",
     {"kind": "ablate", "params": {"checkpoint": NANO, "interventions": ["frob 0.0"]}}, 400,
     "unknown intervention 'frob'"),
    ("head-out-of-range-spec", "POST", "/jobs",
     {"kind": "ablate", "params": {"checkpoint": NANO, "interventions": ["mask-head 9.9"]}},
     400, "head 9.9 is not in this model"),
    ("head-out-of-range-form", "POST", "/jobs",
     {"kind": "ablate", "params": {"checkpoint": NANO, "layer": 0, "head": 7}}, 400,
     "head 0.7 is not in this model"),
    ("unclosed-quote", "POST", "/jobs",
     {"kind": "ablate", "params": {"checkpoint": NANO, "interventions": ["patch 0.0 from='red"]}},
     400, "unclosed quote"),
    ("sweep-without-wildcard", "POST", "/jobs",
     {"kind": "ablate", "params": {"checkpoint": NANO, "sweep": "zero-head 1.1"}}, 400,
     "exactly one head written with '*'"),
    ("spec-steps-beyond-sampling", "POST", "/jobs",
     {"kind": "ablate", "params": {"checkpoint": NANO, "steps": 2,
                                   "interventions": ["zero-head 0.0 steps=5"]}}, 400,
     "names step 5"),
    ("zero-resamples", "POST", "/jobs",
     {"kind": "ablate", "params": {"checkpoint": NANO, "resamples": 0,
                                   "interventions": ["mask-head 0.0"]}}, 400, "must be positive"),
    ("negative-images", "POST", "/jobs",
     {"kind": "sample", "params": {"checkpoint": NANO, "out": "new", "n": -2,
                                   "prompts": [S]}}, 400, "must be positive"),
    ("unknown-word-sample", "POST", "/jobs",
     {"kind": "sample", "params": {"checkpoint": NANO, "out": "new",
                                   "prompts": ["red square above blue elephant"]}}, 400,
     "cannot read prompt"),
    ("unknown-phrasings", "POST", "/jobs",
     {"kind": "screen", "params": {"checkpoint": NANO, "phrasings": "some"}}, 400,
     "choose one of first, all"),
    ("missing-image-folder", "POST", "/jobs", {"kind": "evaluate", "params": {"folder": "nope"}},
     400, "does not exist"),
    ("train-unknown-text-encoder", "POST", "/jobs",
     {"kind": "train", "params": {"out": "new-run", "preset": "nano", "text": "t6"}}, 400,
     "unknown text encoder"),
    ("train-vae-folder-missing", "POST", "/jobs",
     {"kind": "train", "params": {"out": "new-run", "preset": "nano", "codec": "vae:nope"}}, 400,
     "existing AutoencoderKL folder"),
    ("sample-caption-over-20-tokens", "POST", "/jobs",
     {"kind": "sample", "params": {"checkpoint": NANO, "out": "new", "prompts": [LONG]}},
     400, "more than the 20 tokens"),
    ("zero-train-batch", "POST", "/jobs",
     {"kind": "train", "params": {"out": "new-run", "preset": "nano", "batch": 0}}, 400,
     "param 'batch' must be positive"),
    ("no-such-job", "GET", "/jobs/99999", None, 404, "no job 99999"),
    ("cancel-no-such-job", "POST", "/jobs/99999/cancel", None, 404, "no job 99999"),
    ("job-limit-not-a-number", "GET", "/jobs?limit=all", None, 400, "must be an integer"),
    ("unknown-table", "GET", "/tables/nope", None, 404, "no table 'nope'"),
    ("table-checkpoint-escapes", "GET", "/tables/heads?checkpoint=../../etc", None, 400, "'..'"),
    ("table-checkpoint-outside", "GET", "/tables/heads?checkpoint=/etc", None, 400, "outside"),
    ("table-unknown-query", "GET", "/tables/heads?checkpoint=nano&query=relation->sky", None,
     400, "unknown query"),
    ("table-head-out-of-range", "GET", "/tables/head_detail?checkpoint=nano&layer=9&head=0",
     None, 400, "out of range"),
    ("table-head-not-a-number", "GET", "/tables/head_detail?checkpoint=nano&layer=x&head=0",
     None, 400, "an integer"),
    ("table-screen-map-head", "GET", "/tables/screen_map?checkpoint=nano&layer=0&head=5", None,
     400, "not in this model"),
    ("table-unknown-metric", "GET", "/tables/ablations?checkpoint=nano&metric=accuracy", None,
     400, "unknown metric 'accuracy'"),
    ("table-unknown-run", "GET", "/tables/sample_images?checkpoint=nano&run=nope", None, 400,
     "no synopsis run 'nope'"),
    ("table-cache-of-damaged-checkpoint", "GET", "/tables/heads?checkpoint=bad_json", None, 400,
     "not valid JSON"),
    ("table-bad-sort", "GET", "/tables/heads?checkpoint=nano&sort=colour", None, 400,
     "cannot sort by 'colour'"),
    ("table-bad-filter-column", "GET", "/tables/screening?checkpoint=nano&filter=colour=red",
     None, 400, "unknown column 'colour'"),
    ("table-bad-filter-number", "GET", "/tables/heads?checkpoint=nano&filter=score>high", None,
     400, "needs a number"),
    ("table-zero-limit", "GET", "/tables/heads?checkpoint=nano&limit=0", None, 400, "limit in"),
    ("table-negative-offset", "GET", "/tables/heads?checkpoint=nano&offset=-5", None, 400,
     "offset must be >= 0"),
    # issue 20: numbers are finite, in range and fit what stores them, or the job is not queued
    ("sample-cfg-nan", "POST", "/jobs",
     {"kind": "sample", "params": {"checkpoint": NANO, "out": "new", "prompts": [S],
                                   "cfg": "nan"}}, 400, "param 'cfg' must be a finite number"),
    ("sample-cfg-json-nan", "POST", "/jobs", b'{"kind": "selftest", "params": {"seconds": NaN}}',
     400, "param 'seconds' must be a finite number"),
    ("sample-cfg-json-infinity", "POST", "/jobs",
     b'{"kind": "selftest", "params": {"seconds": -Infinity}}', 400, "must be a finite number"),
    ("sample-a-billion-images", "POST", "/jobs",
     {"kind": "sample", "params": {"checkpoint": NANO, "out": "new", "prompts": [S],
                                   "n": 10**9}}, 400, "at most 1,000,000"),
    ("sample-images-times-prompts", "POST", "/jobs",
     {"kind": "sample", "params": {"checkpoint": NANO, "out": "new", "eval_set": True,
                                   "n": 5000}}, 400, "over the limit of 1,000,000"),
    ("sample-seed-over-int64", "POST", "/jobs",
     {"kind": "sample", "params": {"checkpoint": NANO, "out": "new", "prompts": [S],
                                   "seed": 2**64}}, 400, "does not fit a 64-bit integer"),
    ("synopsis-seed-too-large", "POST", "/jobs",
     {"kind": "synopsis", "params": {"checkpoint": NANO, "seed": 2**62 + 1}}, 400,
     "seeds are stored as 64-bit integers"),
    ("ablate-cfg-infinite-string", "POST", "/jobs",
     {"kind": "ablate", "params": {"checkpoint": NANO, "interventions": ["mask-head 0.0"],
                                   "cfg": "inf"}}, 400, "finite"),
    ("huge-integer-param", "POST", "/jobs",
     b'{"kind": "selftest", "params": {"steps": ' + b"9" * 4000 + b"}}", 400, "64-bit"),
    ("params-not-an-object", "POST", "/jobs", {"kind": "sample", "params": 1}, 400,
     "params must be a JSON object (got 1)"),
    ("body-over-the-limit", "POST", "/jobs", b'{"kind": "selftest", "pad": "' + b"x" * 2**21
     + b'"}', 413, "over the limit of 1,048,576 bytes"),
    ("body-nested-too-deep", "POST", "/jobs", b"[" * 100_000 + b"]" * 100_000, 400,
     "nested 100000 deep, over the limit of 32"),
    ("params-nested-too-deep", "POST", "/jobs",
     b'{"kind": "selftest", "params": {"steps": ' + b"[" * 40 + b"]" * 40 + b"}}", 400,
     "over the limit of 32"),
    ("job-id-over-int64", "GET", "/jobs/99999999999999999999", None, 404, "Not Found"),
    ("job-id-thousands-of-digits", "GET", "/jobs/" + "9" * 5000, None, 404, "Not Found"),
    ("cancel-job-id-over-int64", "POST", "/jobs/9223372036854775808/cancel", None, 404,
     "no job 9223372036854775808"),
    ("job-id-just-over-sqlite", "GET", "/jobs/9300000000000000000", None, 404, "no job"),
    ("train-nan-learning-rate", "POST", "/jobs",
     {"kind": "train", "params": {"out": "new-run", "preset": "nano", "lr": "nan"}}, 400,
     "finite"),
]  # fmt: skip


@pytest.mark.parametrize(
    "method, path, body, status, expect", [c[1:] for c in ENGINE_CASES],
    ids=[c[0] for c in ENGINE_CASES],
)  # fmt: skip
def test_engine_bad_request(world, engine, method, path, body, status, expect):
    before = _engine_state(world, engine)
    if isinstance(body, dict):
        r = engine.http.request(method, path, json={**world.fmt(body), "cwd": str(world.prompts)})
    else:
        r = engine.http.request(method, path, content=body)
    if r.status_code == 201:  # a bad job was queued: take it back before failing
        engine.http.post(f"/jobs/{r.json()['id']}/cancel")
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert isinstance(error, str) and "\n" not in error and "Traceback" not in error
    assert expect in error, error
    assert _engine_state(world, engine) == before


def test_engine_lists_damaged_checkpoints_with_one_line_errors(world, engine):
    """GET /checkpoints: a truncated weights file is an entry with an error, not a 500."""
    r = engine.http.get("/checkpoints")
    assert r.status_code == 200, r.text
    found = {c["name"]: c for c in r.json()["checkpoints"]}
    assert "error" not in found["nano"] and found["nano"]["layers"] == 3
    for name in ("truncated", "bad_json", "binary_json", "list_json", "no_hash"):
        assert "\n" not in found[name]["error"] and found[name]["error"], name
