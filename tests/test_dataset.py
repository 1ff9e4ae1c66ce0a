"""The dataset matches DESIGN.md section 1: scenes, relations, captions, rendering, files."""

import json

import h5py
import numpy as np
import pytest
from clirunner import cli_result
from PIL import Image

from engine.core.errors import UserError
from engine.data import PHRASINGS, RELATIONS, relation_of, render, sample_scenes
from engine.data.files import HDF5Dataset, read_metadata, write_dataset
from engine.data.prompts import eval_prompts, parse_prompt
from engine.data.render import shape_mask
from engine.data.scenes import BACKGROUND, Scene


@pytest.mark.parametrize(
    "dx,dy,expected",
    [
        (0, 0, None),
        (5, 5, None),
        (-5, 5, None),
        (0, -6, "above"),  # y grows downward: object 1 higher means dy < 0
        (0, 6, "below"),
        (-6, 0, "left"),
        (6, 5, "right"),
        (-6, -6, "upper-left"),
        (6, -6, "upper-right"),
        (-6, 6, "lower-left"),
        (30, 40, "lower-right"),
        (5, -80, "above"),
        (-90, 5, "left"),
        (5.5, 0, "right"),
    ],
)
def test_relation_rule(dx, dy, expected):
    assert relation_of(dx, dy) == expected


def test_22_phrasings_cover_8_relations():
    assert sum(len(v) for v in PHRASINGS.values()) == 22
    assert set(PHRASINGS) == set(RELATIONS) and len(RELATIONS) == 8


def test_scenes_deterministic_and_sliceable():
    a = sample_scenes(50, seed=3)
    b = sample_scenes(50, seed=3)
    assert a == b
    assert sample_scenes(10, seed=3, start=20) == a[20:30]
    assert sample_scenes(50, seed=4) != a
    assert np.array_equal(render(a[0]), render(b[0]))


def test_scene_invariants():
    scenes = sample_scenes(2000, seed=0)
    colour_words = 0
    for s in scenes:
        assert s.shape1 != s.shape2
        for v in (s.x1, s.y1, s.x2, s.y2):
            assert 17 <= v <= 111
        assert s.relation == relation_of(s.x1 - s.x2, s.y1 - s.y2)
        assert s.phrase in PHRASINGS[s.relation]
        # every caption is derivable from the scene, and parses back to it
        p = parse_prompt(s.caption)
        assert (p.shape1, p.shape2, p.relation) == (s.shape1, s.shape2, s.relation)
        assert (p.color1, p.color2) == ("red", "blue")
        colour_words += s.keep_color1 + s.keep_color2
    assert 0.45 < colour_words / (2 * len(scenes)) < 0.55
    assert {s.relation for s in scenes} == set(RELATIONS)


def test_render_pure_colours_and_geometry():
    s = Scene("circle", "square", 40, 40, 90, 90, "upper-left", "to the upper left of", True, True)
    img = render(s)
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert colours == {BACKGROUND, (255, 0, 0), (0, 0, 255)}
    red = (img == (255, 0, 0)).all(-1)
    blue = (img == (0, 0, 255)).all(-1)
    assert blue.sum() == 32 * 32  # square side 32 exactly
    assert abs(red.sum() - np.pi * 16**2) < 40  # circle radius 16
    ys, xs = np.nonzero(red)
    assert abs(xs.mean() + 0.5 - 40) < 0.1 and abs(ys.mean() + 0.5 - 40) < 0.1


def test_triangle_apex_up_and_centroid():
    m = shape_mask("triangle", 64, 64)
    ys, xs = np.nonzero(m)
    assert abs(m.sum() - 32 * 32 * np.sqrt(3) / 4) < 20
    assert abs(ys.mean() + 0.5 - 64) < 0.5 and abs(xs.mean() + 0.5 - 64) < 0.5
    # narrow at the top (small y), full width at the bottom
    top, bottom = ys.min(), ys.max()
    assert m[top].sum() < 4 and m[bottom].sum() > 28


def test_object2_drawn_over_object1():
    s = Scene("square", "circle", 60, 60, 66, 60, "left", "left of", True, True)
    img = render(s)
    assert tuple(img[60, 66]) == (0, 0, 255)


@pytest.mark.parametrize("size", [32, 64, 256])
def test_other_sizes_scale_the_scene(size):
    s = sample_scenes(1, seed=1)[0]
    big = render(s, 128)
    small = render(s, size)
    assert small.shape == (size, size, 3)
    frac = lambda im, c: (im == c).all(-1).mean()  # noqa: E731
    for c in ((255, 0, 0), (0, 0, 255)):
        assert abs(frac(small, c) - frac(big, c)) < 0.02


def test_eval_prompts():
    ps = eval_prompts()
    assert len(ps) == 264 and len({p.text for p in ps}) == 264
    for p in ps:
        assert p.shape1 != p.shape2
        q = parse_prompt(p.text)
        assert (q.shape1, q.shape2, q.relation) == (p.shape1, p.shape2, p.relation)


def test_write_imagefolder_and_hdf5(tmp_path):
    out = write_dataset(tmp_path / "d", n=20, seed=7, size=64, hdf5=True)
    rows = read_metadata(out)
    scenes = sample_scenes(20, seed=7)
    assert len(rows) == 20
    for row, s in zip(rows, scenes, strict=True):
        assert row["text"] == s.caption and row["relation"] == s.relation
        img = np.array(Image.open(out / row["file_name"]))
        assert np.array_equal(img, render(s, 64))
    ds = HDF5Dataset(out)
    assert ds.images.shape == (20, 64, 64, 3) and ds.text[3] == scenes[3].caption
    with h5py.File(out / "dataset.h5") as f:
        assert json.loads(f["records"][5])["x1"] == scenes[5].x1


def test_render_refuses_nonempty_folder_and_bad_counts(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("precious")
    with pytest.raises(UserError, match="not empty"):
        write_dataset(tmp_path / "d", n=3)
    assert (tmp_path / "d" / "keep.txt").read_text() == "precious"
    with pytest.raises(UserError, match="positive"):
        write_dataset(tmp_path / "e", n=0)
    assert not (tmp_path / "e").exists()


def test_cli_render(tmp_path):
    out = tmp_path / "d"
    r = cli_result("dataset", "render", out, "--n", "12", "--seed", "0")
    assert r.returncode == 0, r.stderr
    assert len(read_metadata(out)) == 12
    r = cli_result("dataset", "render", out, "--n", "12")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
