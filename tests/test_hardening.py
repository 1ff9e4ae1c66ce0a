"""Hardening, second pass (issue 20): the shared number checks, records that hold NaN, bounded
sizes, symlinks, CSV cells, special files and SIGTERM. Fast tests on tiny inputs; the cases that
need a checkpoint are in tests/test_bad_input.py's table."""

from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path

import pytest
from clirunner import cli_subprocess
from engine_process import wait_until

from engine.core import limits
from engine.core.errors import UserError, one_line

# --- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, bound, expect",
    [
        (math.nan, limits.CFG, "must be a finite number"),
        (math.inf, limits.CFG, "must be a finite number"),
        (-math.inf, limits.SEED, "must be a finite number"),
        (True, limits.CFG, "must be a number"),
        ("4.5", limits.CFG, "must be a number"),
        (2**63, limits.SEED, "does not fit a 64-bit integer"),
        (2**62 + 1, limits.SEED, "at most 4,611,686,018,427,387,904"),
        (-1, limits.SEED, "must be >= 0"),
        (0, limits.BATCH, "must be positive"),
        (1.5, limits.BATCH, "must be a whole number"),
        (10**9, limits.IMAGES_PER_PROMPT, "at most 1,000,000"),
        (1001, limits.SAMPLER_STEPS, "at most 1000 (got 1001); the schedule has 1000 steps"),
        (100.5, limits.CFG, "at most 100"),
    ],
)
def test_bound_refuses_with_the_bound_named(value, bound, expect):
    with pytest.raises(UserError) as e:
        bound.check("--x", value)
    assert str(e.value).startswith("--x ") and expect in str(e.value)


def test_bound_accepts_and_normalises():
    assert limits.SEED.check("--seed", 2**62) == 2**62
    assert limits.BATCH.check("--batch-size", 4.0) == 4 and isinstance(
        limits.BATCH.check("b", 4.0), int
    )
    assert limits.CFG.check("--cfg", 0) == 0 and limits.CFG.check("--cfg", 4.5) == 4.5


def test_a_huge_integer_is_named_not_printed():
    """Python refuses to print integers over 4300 digits: the message must not try."""
    with pytest.raises(UserError) as e:
        limits.SEED.check("--seed", 10**5000)
    assert "digits" in str(e.value) and len(str(e.value)) < 200


def test_engine_params_share_the_checks():
    from engine.service.kinds import get_kind

    kind = get_kind("selftest")
    for bad, expect in (("nan", "finite"), ("inf", "finite"), ("-inf", "finite"), (1e6, "at most")):
        with pytest.raises(UserError, match=expect):
            kind.check({"seconds": bad})
    with pytest.raises(UserError, match="64-bit"):
        kind.check({"steps": str(2**64)})
    assert kind.check({"seconds": "0.5", "steps": "3"})["seconds"] == 0.5


def test_error_messages_are_cut_to_one_short_line():
    caption = "red " * 250_000  # 1 MB
    msg = one_line(f"cannot read prompt {caption!r}: unknown word\nsecond line")
    assert "\n" not in msg and len(msg) <= 400 and "characters in all" in msg
    assert one_line("short\nmessage") == "short message"
    assert len(limits.shown(caption)) <= limits.MAX_ECHO + 30


# --- job records that already hold NaN --------------------------------------------------------


def test_records_holding_nan_are_served(short_tmp, start_engine):
    """An older engine stored NaN in a job's params and result: the records read back with
    null in their place, and a live engine answers GET /jobs and /jobs/N (was HTTP 500)."""
    from engine.service.records import JobRecords

    d = short_tmp
    recs = JobRecords(d / "jobs.sqlite")
    job = recs.add("selftest", {"seconds": 1.0})
    recs.close()
    db = sqlite3.connect(d / "jobs.sqlite")
    db.execute(
        "UPDATE jobs SET params = ?, result = ?, state = 'done' WHERE id = ?",
        ('{"seconds": NaN, "cfg": Infinity}', '{"m": [NaN, 1.0]}', job["id"]),
    )
    db.commit()
    db.close()
    recs = JobRecords(d / "jobs.sqlite")
    (row,) = recs.all()
    assert row["params"] == {"seconds": None, "cfg": None}
    assert row["result"] == {"m": [None, 1.0]}
    json.dumps(row, allow_nan=False)
    recs.update(row["id"], result={"x": math.inf}, eta_s=math.nan, progress=math.nan)
    row = recs.get(row["id"])
    assert row["result"] == {"x": None} and row["eta_s"] is None and row["progress"] == 0.0
    recs.close()
    e = start_engine(d)
    r = e.http.get("/jobs")
    assert r.status_code == 200, r.text
    assert r.json()["jobs"][0]["params"]["seconds"] is None
    assert e.http.get(f"/jobs/{job['id']}").status_code == 200
    r = e.http.post("/jobs", json={"kind": "selftest", "params": {"seconds": "nan"}})
    assert r.status_code == 400 and "finite" in r.json()["error"]
    assert len(e.http.get("/jobs").json()["jobs"]) == 1  # never queued


# --- symlinks ---------------------------------------------------------------------------------


@pytest.fixture
def ckpt_copy(nano_ckpt, tmp_path):
    import shutil

    step = (nano_ckpt / "latest").resolve()
    dst = tmp_path / "run" / step.name
    shutil.copytree(step, dst, ignore=shutil.ignore_patterns("train_state"))
    return dst


def _export(src, out):
    from engine.model.checkpoint import export_checkpoint

    return export_checkpoint(src, out)


@pytest.mark.parametrize("kind", ["out", "absolute", "loop", "dangling", "fifo"])
def test_export_refuses_links_out_loops_and_special_files(ckpt_copy, tmp_path, kind):
    import os

    secret = tmp_path / "secret.txt"
    secret.write_text("not for sharing\n")
    enc = ckpt_copy / "text_encoder"
    if kind == "out":
        (enc / "notes.txt").symlink_to(os.path.relpath(secret, enc))
        expect = "symlink leading outside the checkpoint"
    elif kind == "absolute":
        (enc / "notes.txt").symlink_to(secret)
        expect = "symlink to an absolute path"
    elif kind == "loop":
        (enc / "loop").symlink_to("loop")
        expect = "broken or looping symlink"
    elif kind == "dangling":
        (enc / "gone").symlink_to("nothing-here")
        expect = "broken or looping symlink"
    else:
        os.mkfifo(enc / "pipe")
        expect = "not a regular file"
    out = tmp_path / "export"
    with pytest.raises(UserError, match=expect):
        _export(ckpt_copy, out)
    assert not out.exists() and not (tmp_path / ".export.partial").exists()


def test_export_keeps_links_inside_as_links_and_leaves_nothing_on_error(ckpt_copy, tmp_path):
    import os

    (ckpt_copy / "text_encoder" / "alias.json").symlink_to("config.json")
    out = _export(ckpt_copy, tmp_path / "export")
    link = out / "text_encoder" / "alias.json"
    assert link.is_symlink() and os.readlink(link) == "config.json"
    # an error half-way (here: the weights cannot be re-hashed) removes the partial folder
    import engine.model.checkpoint as ck

    real = ck.sha256_file
    calls = []

    def failing(p):
        calls.append(p)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(p)

    ck.sha256_file = failing
    try:
        with pytest.raises(KeyboardInterrupt):
            _export(ckpt_copy, tmp_path / "export2")
    finally:
        ck.sha256_file = real
    assert not (tmp_path / "export2").exists() and not (tmp_path / ".export2.partial").exists()


def test_engine_refuses_a_run_folder_that_is_a_symlink(tmp_path):
    import os

    from engine.service import daemon

    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o755)
    os.chmod(target, 0o755)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "run").symlink_to(target)
    with pytest.raises(UserError, match="is a symlink"):
        daemon.acquire_lock(cache)
    assert (target.stat().st_mode & 0o777) == 0o755 and not list(target.iterdir())


def test_checkpoint_listing_never_follows_links_out_of_the_roots(ckpt_copy, tmp_path):
    import shutil

    from engine.core import roots
    from engine.service import tables

    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(ckpt_copy, root / "inside")
    (root / "outside").symlink_to(ckpt_copy)  # a checkpoint, but outside the root
    (root / "run-out").mkdir()
    (root / "run-out" / "latest").symlink_to(ckpt_copy)
    (root / "alias").symlink_to("inside")  # stays inside: listed once (same checkpoint)
    roots.configure(tmp_path / "cache", [root])
    try:
        names = {c["name"] for c in tables.list_checkpoints()}
    finally:
        roots.configure("cache")
    assert len(names & {"inside", "alias"}) == 1 and not names & {"outside", "run-out"}, names


# --- CSV cells and CSV targets ----------------------------------------------------------------


def test_formula_cells_are_neutralised_numbers_kept():
    import csv
    import io

    from workbench.output import rows_to_csv, safe_cell

    for cell in ("=1+2", "+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx", '=HYPERLINK("x")'):
        assert safe_cell(cell) == "'" + cell
    for cell in ("-0.5", "+3", "-1e-3", "plain", "a=b", "", -2, -0.25, 3):
        assert safe_cell(cell) == cell
    text = rows_to_csv([{"name": "=2*3", "delta": -0.5, "s": "-0.5", "n": 4}])
    assert list(csv.reader(io.StringIO(text))) == [
        ["name", "delta", "s", "n"],
        ["'=2*3", "-0.5", "-0.5", "4"],
    ]


def test_evaluate_csv_neutralises_file_names(tmp_path, capsys, monkeypatch):
    """The issue's reproduction: a file name starting with '=' reaches `evaluate --format csv`."""
    import csv
    import io

    from clirunner import run_cli

    from engine.data.files import write_dataset

    d = write_dataset(tmp_path / "data", 2, seed=0, size=64)
    (d / "00000.png").rename(d / "=1+1.png")
    meta = (d / "metadata.jsonl").read_text().replace('"00000.png"', '"=1+1.png"')
    (d / "metadata.jsonl").write_text(meta)
    code, out, err = run_cli(["evaluate", d, "--format", "csv"], capsys, monkeypatch)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    names = [r.get("file_name") for r in rows]
    assert "'=1+1.png" in names and "=1+1.png" not in names, names


def test_csv_target_checks_and_mode(tmp_path):
    import os
    import stat

    from workbench.output import write_text_atomic

    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="FIFO"):
        write_text_atomic(fifo, "a\n")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    ro = tmp_path / "ro.csv"
    ro.write_text("old\n")
    ro.chmod(0o444)
    with pytest.raises(UserError, match="read-only"):
        write_text_atomic(ro, "new\n")
    assert ro.read_text() == "old\n"
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "elsewhere.csv")
    with pytest.raises(UserError, match="symlink"):
        write_text_atomic(link, "x\n")
    kept = tmp_path / "kept.csv"
    kept.write_text("old\n")
    kept.chmod(0o640)
    write_text_atomic(kept, "new\n")
    assert kept.read_text() == "new\n" and stat.S_IMODE(kept.stat().st_mode) == 0o640
    fresh = tmp_path / "fresh.csv"
    old = os.umask(0o027)
    try:
        write_text_atomic(fresh, "x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_format_help_says_how_csv_cells_are_written(capsys, monkeypatch):
    from clirunner import run_cli

    for cmd in (["evaluate"], ["heads"], ["ablate"], ["curves"], ["screen"], ["jobs", "list"]):
        code, out, _ = run_cli([*cmd, "--help"], capsys, monkeypatch)
        assert code == 0 and "formulas" in " ".join(out.split()), cmd


# --- resource bounds, checked before allocation -------------------------------------------------


@pytest.mark.parametrize(
    "edit, expect",
    [
        ({"num_layers": 100_000}, "num_layers is 100000; layers must be an integer from 1 to 256"),
        ({"num_attention_heads": 10**9}, "attention heads must be an integer from 1 to 256"),
        ({"attention_head_dim": 0}, "head width must be an integer from 1 to 1,024"),
        ({"num_attention_heads": 64, "attention_head_dim": 1024}, "over the limit of 16,384"),
        ({"num_layers": "3"}, "num_layers is '3'"),
        ({"num_layers": 2.5}, "num_layers is 2.5"),
    ],
)
def test_model_config_sizes_are_bounded_before_loading(ckpt_copy, edit, expect):
    from engine.model.checkpoint import describe, load_checkpoint
    from engine.ops.params import model_size

    path = ckpt_copy / "transformer" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    for fn in (load_checkpoint, describe, model_size):
        with pytest.raises(UserError) as e:
            fn(ckpt_copy)
        assert expect in str(e.value) and "config.json" in str(e.value), (fn, e.value)


@pytest.mark.parametrize(
    "text, expect",
    [("[1, 2]", "is not a JSON object"), ("{", "is not valid JSON"), ("[" * 5000, "not valid")],
)
def test_transformer_config_not_a_mapping(ckpt_copy, text, expect):
    from engine.model.checkpoint import describe

    (ckpt_copy / "transformer" / "config.json").write_text(text)
    with pytest.raises(UserError, match=expect):
        describe(ckpt_copy)


@pytest.mark.parametrize(
    "edit, expect",
    [
        ({"res": "32"}, "'res' is '32', not an integer"),
        ({"text": 5}, "'text' is 5, not a string"),
        ({"step": "last"}, "'step' is 'last'"),
        ({"res": 10**6}, "not a side from 1 to 4096"),
    ],
)
def test_workbench_json_value_types(ckpt_copy, edit, expect):
    from engine.model.checkpoint import describe

    meta = ckpt_copy / "workbench.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), **edit}))
    with pytest.raises(UserError, match=expect):
        describe(ckpt_copy)


def test_render_size_and_count_are_bounded(tmp_path):
    from engine.data.files import check_render_args

    with pytest.raises(UserError, match="--size must be at most 2048"):
        check_render_args(tmp_path / "d", 10, 100_000, False)
    with pytest.raises(UserError, match="--n must be at most 10,000,000"):
        check_render_args(tmp_path / "d", 10**9, 64, False)
    assert not (tmp_path / "d").exists()


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG whose header claims w x h pixels (the pixel data is missing): a decoder that
    trusted it would allocate w*h*3 bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_evaluate_bounds_images_and_survives_degenerate_ones(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from engine.data.files import write_dataset
    from engine.eval import evaluate

    d = write_dataset(tmp_path / "data", 6, seed=0, size=64)
    _png_header_only(d / "00000.png", 10_000, 10_000)
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(d / "00001.png")  # breaks the detector
    (d / "00002.png").write_bytes(b"\0" * 100)
    decoded = []
    real = evaluate.cv2.imdecode
    monkeypatch.setattr(
        evaluate.cv2, "imdecode", lambda data, flags: decoded.append(data.size) or real(data, flags)
    )
    res = evaluate.evaluate_folder(d, workers=1)
    errors = {r["file_name"]: r["error"] for r in res.per_image}
    assert "10000x10000 pixels, over the limit of 16,777,216" in errors["00000.png"]
    assert "detection failed" in errors["00001.png"]
    assert errors["00002.png"] and res.n == 6 and res.n_errors == 3
    assert all(errors[f"0000{k}.png"] is None for k in (3, 4, 5))
    assert len(decoded) == 5  # the over-sized one was never decoded
    monkeypatch.setattr(evaluate, "BLOCK", 2)  # blocks change nothing but memory
    again = evaluate.evaluate_folder(d, workers=1)
    assert again.per_image == res.per_image


def test_sample_streams_to_disk_with_the_same_images(nano_ckpt, tmp_path):
    """write_samples samples and writes one batch at a time; the images are those of one call
    to sample_images over all items (same batches, same noise)."""
    import numpy as np
    from PIL import Image

    from engine.core.sampling import SamplingSettings
    from engine.data.prompts import parse_prompt
    from engine.model.checkpoint import load_checkpoint
    from engine.model.sample_files import write_samples
    from engine.model.sampler import sample_images

    prompts = [parse_prompt("red square above blue circle"), parse_prompt("circle left of square")]
    sampling = SamplingSettings(steps=2, batch_size=4, seed=7)
    out = write_samples(nano_ckpt, tmp_path / "s", prompts, 3, sampling)
    ref = sample_images(
        load_checkpoint(nano_ckpt),
        [p.text for p in prompts for _ in range(3)],
        [7 + k for _ in prompts for k in range(3)],
        sampling,
    )
    meta = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [m["seed"] for m in meta] == [7, 8, 9, 7, 8, 9]
    for m, img in zip(meta, ref, strict=True):
        assert np.array_equal(np.asarray(Image.open(out / m["file_name"])), img.numpy())


# --- SIGTERM ----------------------------------------------------------------------------------


def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    """`dataset render` killed with SIGTERM mid-render: exit 143, one line, no .partial folder
    and no output folder (SIGTERM used to leave the partial folder behind)."""
    import signal

    out = tmp_path / "data"
    partial = tmp_path / ".data.partial"
    p = cli_subprocess(["dataset", "render", out, "--n", "200000", "--size", "32"], tmp_path)
    try:
        wait_until(lambda: p.poll() is not None or any(partial.glob("*.png")), 120, "a PNG")
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 143, err
    assert err.strip() == "terminated; nothing half-written was kept", err
    assert not partial.exists() and not out.exists()


# --- files read from disk: damage gives one line naming the file ---------------------------------


def test_damaged_hdf5_chunk_names_file_and_dataset(tmp_path):
    import h5py
    import numpy as np

    from engine.store.h5 import read_dataset

    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("synopsis/run/flows", data=np.arange(4096.0), chunks=(4096,),
                              compression="gzip")  # fmt: skip
        info = ds.id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    data[info.byte_offset : info.byte_offset + info.size] = os.urandom(info.size)
    path.write_bytes(bytes(data))
    with h5py.File(path, "r") as f, pytest.raises(UserError) as e:
        read_dataset(f["synopsis/run/flows"])
    msg = str(e.value)
    assert "/synopsis/run/flows" in msg and str(path) in msg and "damaged" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "too-big"])
def test_prompts_file_that_is_not_a_regular_file(tmp_path, kind, monkeypatch):
    from engine.data.prompts import read_prompts_file

    p = tmp_path / "prompts.txt"
    if kind == "fifo":
        os.mkfifo(p)
        expect = "is a FIFO, not a regular file"
    elif kind == "dev-zero":
        p = Path("/dev/zero")
        expect = "is a device or socket, not a regular file"
    else:
        p.write_text("red square above blue circle\n" * 10)
        monkeypatch.setattr(limits, "MAX_METADATA_BYTES", 100)
        expect = "over the limit of 100"
    with pytest.raises(UserError, match=expect):
        read_prompts_file(p)


def test_metadata_fifo_and_metrics_step(tmp_path):
    from engine.data.files import read_metadata
    from engine.train.curves import read_curves

    os.mkfifo(tmp_path / "metadata.jsonl")
    with pytest.raises(UserError, match="is a FIFO"):
        read_metadata(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 10, "spatial": 0.1}\n{"step": "x"}\n')
    with pytest.raises(UserError, match=r"metrics.jsonl:2: 'step' is 'x', not an integer"):
        read_curves(run)
    (run / "metrics.jsonl").write_text('{"step": 10}\n[1]\n{"step": 20, "cut')
    assert [r["step"] for r in read_curves(run)] == [10]


@pytest.mark.parametrize("kind", ["good", "shape", "dtype", "missing"])
def test_synopsis_flows_of_the_wrong_shape_or_dtype(tmp_path, kind):
    import h5py
    import numpy as np

    from engine.probe.ranking import BRANCHES, IMAGE_CATS, TEXT_CATS, parse_query, query_values
    from engine.store.cache import Store

    path = tmp_path / "c.h5"
    shape = (2, 3, 4, len(BRANCHES), 5, len(IMAGE_CATS), len(TEXT_CATS))
    with h5py.File(path, "w") as f:
        g = f.create_group("synopsis/run-1")
        if kind == "good":
            g["cross"] = np.ones(shape, np.float32)
        elif kind == "shape":
            g["cross"] = np.ones(shape[:-1], np.float32)
        elif kind == "dtype":
            g.create_dataset("cross", shape=(2,), dtype=h5py.string_dtype())

    q = parse_query("relation->object1")
    if kind == "good":
        assert query_values(Store(path), "run-1", q).shape == (2, 3, 4, 5)
        return
    with pytest.raises(UserError) as e:
        query_values(Store(path), "run-1", q)
    assert "/synopsis/run-1/cross" in str(e.value) and str(path) in str(e.value)
