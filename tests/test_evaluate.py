"""The evaluator: detection on ground-truth renders (any size, occlusion), another renderer,
deliberately wrong images, the prompt parser, bad input and the `evaluate` command."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from engine.core.errors import UserError
from engine.data.prompts import eval_prompts, parse_prompt
from engine.data.relations import ALL_PHRASES, RELATIONS
from engine.data.render import (
    CIRCLE_RADIUS,
    SQUARE_SIDE,
    TRIANGLE_HEIGHT,
    TRIANGLE_SIDE,
    render,
    render_batch,
    shape_mask,
)
from engine.data.scenes import BACKGROUND, COLORS, SHAPES, Scene, make_caption, sample_scenes
from engine.eval.detect import Detection, detect, detect_batch
from engine.eval.evaluate import METRICS, evaluate_arrays, evaluate_folder, score

N = 2000
ROOT = Path(__file__).resolve().parents[1]


def _named(scene: Scene, relation: str | None = None, phrase: str | None = None) -> str:
    """The scene's caption with both colours named (optionally another relation phrase)."""
    from engine.data.relations import PHRASINGS

    phrase = phrase or (PHRASINGS[relation][0] if relation else scene.phrase)
    return make_caption(scene.shape1, scene.shape2, phrase, scene.color1, scene.color2)


def _assert_all_at_least(metrics: dict, bar: float, what: str) -> None:
    low = {m: round(v, 4) for m, v in metrics.items() if v < bar}
    assert not low, f"{what}: metrics below {bar}: {low} (all: {metrics})"


# -------------------------------------------------------------------------------------------
# ground truth


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return sample_scenes(N, seed=2024)


@pytest.mark.parametrize("size", [128, 64])
def test_ground_truth_renders_score_at_least_099(scenes, size):
    overlapping = sum(
        bool((shape_mask(s.shape1, s.x1, s.y1) & shape_mask(s.shape2, s.x2, s.y2)).any())
        for s in scenes[:400]
    )
    assert overlapping > 60  # the set really exercises occlusion (~25-30% of scenes)
    result = evaluate_arrays(render_batch(scenes, size), [s.caption for s in scenes])
    assert result.n == N and set(result.metrics) == set(METRICS)
    print(f"ground truth {size} px:", result.metrics)
    _assert_all_at_least(result.metrics, 0.99, f"ground truth at {size} px")


@pytest.mark.parametrize("size,bar", [(256, 0.99), (96, 0.98), (32, 0.95)])
def test_other_image_sizes(size, bar):
    scenes = sample_scenes(300, seed=7)
    result = evaluate_arrays(render_batch(scenes, size), [s.caption for s in scenes])
    _assert_all_at_least(result.metrics, bar, f"ground truth at {size} px")


def test_centres_are_in_canvas_units_and_occluded_centres_are_not_the_visible_centroid():
    # A blue square over most of a red circle: the visible red crescent's centroid is far
    # from the circle's centre; the fit recovers the centre.
    scene = Scene("circle", "square", 60, 64, 70, 64, "left", "left of", True, True)
    for size in (64, 128, 256):
        dets = {d.color: d for d in detect(render(scene, size))}
        assert dets["red"].shape == "circle" and dets["blue"].shape == "square"
        assert dets["red"].occluded
        assert abs(dets["red"].cx - 60) <= 0.5 and abs(dets["red"].cy - 64) <= 0.5
        assert abs(dets["blue"].cx - 70) <= 0.5 and abs(dets["blue"].cy - 64) <= 0.5


def test_objects_cut_in_pieces_by_the_one_on_top_count_once():
    import cv2

    split, hidden_most = [], []
    for s in sample_scenes(6000, seed=99):
        m1, m2 = shape_mask(s.shape1, s.x1, s.y1), shape_mask(s.shape2, s.x2, s.y2)
        visible = (m1 & ~m2).astype(np.uint8)
        if cv2.connectedComponents(visible, connectivity=8)[0] - 1 >= 2:
            split.append(s)
        elif 0 < visible.sum() < 0.5 * m1.sum():
            hidden_most.append(s)
    assert len(split) >= 50 and len(hidden_most) >= 50
    for group, what in ((split, "red object in pieces"), (hidden_most, "red mostly hidden")):
        for size in (128, 64):
            result = evaluate_arrays(render_batch(group, size), [s.caption for s in group])
            _assert_all_at_least(result.metrics, 0.99, f"{what} at {size} px ({len(group)})")


def test_batch_and_single_image_paths_agree(scenes):
    imgs = render_batch(scenes[:300], 64)
    batch = detect_batch(imgs)
    for img, dets in zip(imgs, batch, strict=True):
        single = detect(img)
        key = sorted((d.color, d.shape, round(d.cx, 3), round(d.cy, 3)) for d in single)
        assert key == sorted((d.color, d.shape, round(d.cx, 3), round(d.cy, 3)) for d in dets)


def test_mixed_sizes_and_image_types():
    scenes = sample_scenes(12, seed=3)
    images = [render(s, size) for s, size in zip(scenes, [32, 64, 128, 256] * 3, strict=True)]
    images[1] = images[1].astype(np.float32) / 255.0  # floats in [0, 1]
    images[2] = np.concatenate([images[2], np.full(images[2].shape[:2] + (1,), 255, np.uint8)], -1)
    result = evaluate_arrays(images, [s.caption for s in scenes])
    assert result.metrics["overall"] >= 11 / 12


# -------------------------------------------------------------------------------------------
# another renderer of the same spec


def pil_render(scene: Scene, size: int = 128) -> np.ndarray:
    """The scene drawn with PIL's ImageDraw: ellipse, rectangle, polygons.

    PIL rounds coordinates to whole pixels and fills edges inclusively, so each shape is given
    the pixel centres nearest the spec's edges (canvas x maps to pixel-centre coordinate
    x * size / 128 - 0.5); the triangle is two mirrored polygons so that it can be centred on
    a pixel edge. Slanted and curved edges are PIL's own rasterisation.
    """
    k = size / 128
    im = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(im)

    def px(v: float) -> float:
        return k * v - 0.5

    for shape, cx, cy, color in (
        (scene.shape1, scene.x1, scene.y1, COLORS[scene.color1]),
        (scene.shape2, scene.x2, scene.y2, COLORS[scene.color2]),
    ):
        if shape == "circle":
            box = []
            for c in (cx, cy):
                e = k * c  # centre in pixel-edge coordinates
                if abs(e - round(e)) < 1e-9:  # on a pixel edge: even diameter
                    r = round(k * CIRCLE_RADIUS)
                    box.append((round(e) - r, round(e) + r - 1))
                else:  # on a pixel: odd diameter
                    r = round(k * CIRCLE_RADIUS - 0.5)
                    box.append((math.floor(e) - r, math.floor(e) + r))
            draw.ellipse([box[0][0], box[1][0], box[0][1], box[1][1]], fill=color)
        elif shape == "square":
            h = SQUARE_SIDE / 2
            draw.rectangle(
                [
                    math.floor(px(cx - h)) + 1,
                    math.floor(px(cy - h)) + 1,
                    math.ceil(px(cx + h)) - 1,
                    math.ceil(px(cy + h)) - 1,
                ],
                fill=color,
            )
        else:
            h, s = TRIANGLE_HEIGHT, TRIANGLE_SIDE
            top, base = math.ceil(px(cy - 2 * h / 3)), math.floor(px(cy + h / 3))
            left, right = math.ceil(px(cx - s / 2)), math.floor(px(cx + s / 2))
            left += px(cx - s / 2) == left
            right -= px(cx + s / 2) == right
            mid_l, mid_r = math.floor(px(cx)), math.ceil(px(cx))
            draw.polygon([(mid_l, top), (mid_l, base), (left, base)], fill=color)
            draw.polygon([(mid_r, top), (mid_r, base), (right, base)], fill=color)
    return np.asarray(im)


@pytest.mark.parametrize("size,bar", [(128, 0.99), (64, 0.98)])
def test_a_different_renderer_scores_just_as_well(size, bar):
    scenes = sample_scenes(N, seed=77)
    images = np.stack([pil_render(s, size) for s in scenes])
    ours = render_batch(scenes[:200], size)
    differs = (images[:200] != ours).any(-1).sum((1, 2))
    assert (differs > 0).mean() > 0.5  # it really is a different rasterisation
    result = evaluate_arrays(images, [s.caption for s in scenes])
    print(f"PIL renderer {size} px:", result.metrics)
    _assert_all_at_least(result.metrics, bar, f"PIL renderer at {size} px")


# -------------------------------------------------------------------------------------------
# deliberately wrong images and prompts


@pytest.fixture(scope="module")
def few() -> list[Scene]:
    return sample_scenes(300, seed=11)


def _means(images, prompts) -> dict:
    return evaluate_arrays(images, prompts).metrics


def test_swapped_colours_break_binding_not_shapes_or_colours(few):
    swapped = [Scene(**{**s.__dict__, "color1": "blue", "color2": "red"}) for s in few]
    m = _means(render_batch(swapped, 128), [_named(s) for s in few])
    for key in ("exist_binding", "unique_binding", "spatial", "overall", "spatial_loose"):
        assert m[key] == 0.0, (key, m)
    for key in ("shape", "color", "shape_loose", "color_loose"):
        assert m[key] >= 0.99, (key, m)


def test_one_object_missing(few):
    images = []
    for s in few:
        img = np.empty((128, 128, 3), np.uint8)
        img[:] = BACKGROUND
        img[shape_mask(s.shape1, s.x1, s.y1)] = COLORS[s.color1]
        images.append(img)
    m = _means(np.stack(images), [_named(s) for s in few])
    strict = ("shape", "color", "exist_binding", "unique_binding", "spatial", "overall")
    for key in (*strict, "spatial_loose"):
        assert m[key] == 0.0, (key, m)
    assert m["shape_loose"] >= 0.99 and m["color_loose"] >= 0.99, m


def test_empty_image_fails_everything():
    img = np.full((64, 64, 3), 128, np.uint8)
    got = score(parse_prompt("red circle above blue square"), detect(img))
    assert not any(got.values())


_OPPOSITE = {
    "above": "below",
    "below": "above",
    "left": "right",
    "right": "left",
    "upper-left": "lower-right",
    "lower-right": "upper-left",
    "upper-right": "lower-left",
    "lower-left": "upper-right",
}


def test_wrong_relation_in_the_prompt_fails_spatial(few):
    images = render_batch(few, 128)
    m = _means(images, [_named(s, _OPPOSITE[s.relation]) for s in few])
    for key in ("spatial", "overall", "spatial_loose", "color_relation"):
        assert m[key] == 0.0, (key, m)
    for key in ("shape", "color", "exist_binding", "unique_binding"):
        assert m[key] >= 0.99, (key, m)


def test_color_relation_ignores_shapes_but_not_positions(few):
    # Every object drawn as a circle: the shapes are wrong, the colours' places are right.
    circles = [Scene(**{**s.__dict__, "shape1": "circle", "shape2": "circle"}) for s in few]
    m = _means(render_batch(circles, 128), [_named(s) for s in few])
    assert m["exist_binding"] < 0.5 and m["spatial"] < 0.5, m
    assert m["color_relation"] >= 0.99, m
    # Colours swapped: each colour now sits where the other should, so the relation fails.
    swapped = [Scene(**{**s.__dict__, "color1": "blue", "color2": "red"}) for s in few]
    assert _means(render_batch(swapped, 128), [_named(s) for s in few])["color_relation"] == 0.0


def test_color_relation_weights_fragments_by_area():
    def det(color, cx, cy, area):
        return Detection(color, "circle", cx, cy, area)

    prompt = parse_prompt("red circle above blue square")
    # Two red fragments whose area-weighted centre (y = 30) is above the blue one (y = 60);
    # their plain mean (y = 65) would not be.
    red = [det("red", 64, 20, 900), det("red", 64, 110, 100)]
    assert score(prompt, [*red, det("blue", 64, 60, 800)])["color_relation"]
    assert not score(prompt, [det("red", 64, 62, 800), det("blue", 64, 60, 800)])["color_relation"]
    assert not score(prompt, red)["color_relation"]  # no blue at all


def test_loose_spatial_accepts_one_component_of_a_diagonal(few):
    diagonal = [s for s in few if "-" in s.relation]
    images = render_batch(diagonal, 128)
    # "upper-left" scenes prompted as "left": the strict relation is wrong, the axis holds.
    prompts = [_named(s, s.relation.split("-")[1]) for s in diagonal]
    m = _means(images, prompts)
    assert m["spatial"] == 0.0 and m["spatial_loose"] >= 0.99, m


# -------------------------------------------------------------------------------------------
# prompts


def test_every_phrasing_parses_back_to_its_relation():
    assert len(ALL_PHRASES) == 22
    for phrase, relation in ALL_PHRASES:
        for s1 in SHAPES:
            for s2 in SHAPES:
                if s1 == s2:
                    continue
                for c1, c2 in (("red", "blue"), (None, None), ("red", None), (None, "blue")):
                    p = parse_prompt(make_caption(s1, s2, phrase, c1, c2))
                    assert (p.relation, p.shape1, p.shape2) == (relation, s1, s2)
                    assert (p.color1, p.color2) == ("red", "blue")


def test_eval_prompts_parse_back():
    prompts = eval_prompts()
    assert len(prompts) == 264
    assert {p.relation for p in prompts} == set(RELATIONS)
    for p in prompts:
        q = parse_prompt(p.text)
        assert (q.shape1, q.shape2, q.relation, q.color1, q.color2) == (
            p.shape1,
            p.shape2,
            p.relation,
            p.color1,
            p.color2,
        )


@pytest.mark.parametrize(
    "text,expected",
    [
        ("a red square above a blue circle", ("red", "square", "above", "blue", "circle")),
        (
            "The red square is to the left of the blue circle.",
            ("red", "square", "left", "blue", "circle"),
        ),
        ("triangle below circle", ("red", "triangle", "below", "blue", "circle")),
        ("Blue circle is directly above red square", ("blue", "circle", "above", "red", "square")),
        (
            "red triangle diagonally up and left from a circle",
            ("red", "triangle", "upper-left", "blue", "circle"),
        ),
        (
            "A circle to the lower right of a blue square",
            ("red", "circle", "lower-right", "blue", "square"),
        ),
        ("square  is  RIGHT OF  triangle", ("red", "square", "right", "blue", "triangle")),
    ],
)
def test_parser_reads_hand_written_captions(text, expected):
    p = parse_prompt(text)
    assert (p.color1, p.shape1, p.relation, p.color2, p.shape2) == expected


@pytest.mark.parametrize(
    "text", ["", "a purple hexagon", "red square next to blue circle", "red square above"]
)
def test_parser_rejects_unreadable_text(text):
    with pytest.raises(UserError):
        parse_prompt(text)


def test_prompt_colours_are_honoured():
    scene = Scene("circle", "square", 30, 40, 90, 40, "left", "left of", True, True)
    img = render(scene, 128)
    assert score(parse_prompt("red circle left of blue square"), detect(img))["overall"]
    assert not score(parse_prompt("blue circle left of red square"), detect(img))["exist_binding"]


# -------------------------------------------------------------------------------------------
# folders and the command


def _write_folder(folder: Path, scenes: list[Scene], size: int = 64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.jsonl", "w", encoding="utf-8") as f:
        for i, s in enumerate(scenes):
            name = f"{i:05d}.png"
            Image.fromarray(render(s, size)).save(folder / name)
            f.write(json.dumps({"file_name": name, "text": s.caption, "relation": s.relation}))
            f.write("\n")
    return folder


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the real entry point (workbench.cli.main) in-process."""
    from workbench.cli import main

    monkeypatch.setattr(sys, "argv", ["dit-workbench", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_end_to_end_json(tmp_path, monkeypatch, capsys):
    scenes = sample_scenes(150, seed=5)
    folder = _write_folder(tmp_path / "images", scenes)
    code, out, err = _cli(monkeypatch, capsys, "evaluate", str(folder), "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert set(data) >= {"n", "metrics", "per_image"} and data["n"] == 150
    assert set(data["metrics"]) == set(METRICS)
    _assert_all_at_least(data["metrics"], 0.99, "end to end")
    entry = data["per_image"][0]
    assert entry["file_name"] == "00000.png" and entry["text"] == scenes[0].caption
    assert set(METRICS) <= set(entry) and entry["error"] is None
    assert {d["color"] for d in entry["detections"]} == {"red", "blue"}

    out_file = tmp_path / "result.json"
    code, out, _ = _cli(
        monkeypatch, capsys, "evaluate", str(folder), "--format", "json", "--out", str(out_file)
    )
    assert code == 0 and out == ""
    assert json.loads(out_file.read_text())["metrics"] == data["metrics"]

    code, out, _ = _cli(monkeypatch, capsys, "evaluate", str(folder), "--format", "csv")
    lines = out.splitlines()
    assert code == 0 and lines[0].split(",")[:3] == ["file_name", "text", "shape"]
    assert len(lines) == 151

    code, out, _ = _cli(monkeypatch, capsys, "evaluate", str(folder))
    assert code == 0 and "unique_binding" in out and "1.0000" in out


def test_corrupt_or_missing_images_are_reported_not_fatal(tmp_path, monkeypatch, capsys):
    scenes = sample_scenes(20, seed=6)
    folder = _write_folder(tmp_path / "images", scenes)
    (folder / "00003.png").write_bytes(b"not an image at all")
    data = (folder / "00004.png").read_bytes()
    (folder / "00004.png").write_bytes(data[: len(data) // 3])  # truncated
    with open(folder / "metadata.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"file_name": "gone.png", "text": "red circle above blue square"}))
        f.write("\n")
    code, out, err = _cli(monkeypatch, capsys, "evaluate", str(folder), "--format", "json")
    assert code == 0, err
    assert "Traceback" not in err and "WARN" not in err
    data = json.loads(out)
    assert data["n"] == 21
    errors = {r["file_name"]: r["error"] for r in data["per_image"] if r["error"]}
    assert set(errors) == {"00003.png", "00004.png", "gone.png"}
    for r in data["per_image"]:
        if r["error"]:
            assert not any(r[m] for m in METRICS)
    assert data["metrics"]["overall"] == pytest.approx(18 / 21)


def _bad(tmp_path: Path, lines: list[str] | None, images: bool = True) -> Path:
    folder = tmp_path / "bad"
    folder.mkdir()
    if images:
        Image.fromarray(render(sample_scenes(1, seed=1)[0], 64)).save(folder / "a.png")
    if lines is not None:
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


GOOD = json.dumps({"file_name": "a.png", "text": "red circle above blue square"})


@pytest.mark.parametrize(
    "case,lines,needle",
    [
        ("no metadata", None, "metadata.jsonl"),
        ("empty folder", "EMPTY", "metadata.jsonl"),
        ("not json", [GOOD, '{"file_name": "a.png", "text": '], "metadata.jsonl:2"),
        ("no text", [GOOD, GOOD, json.dumps({"file_name": "a.png"})], "metadata.jsonl:3"),
        ("no file_name", [json.dumps({"text": "red circle above blue square"})], ":1"),
        ("text not a string", [json.dumps({"file_name": "a.png", "text": 5})], ":1"),
        (
            "unreadable prompt",
            [GOOD, json.dumps({"file_name": "a.png", "text": "a hexagon"})],
            ":2",
        ),
        ("empty metadata", ["", ""], "metadata.jsonl"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, monkeypatch, capsys, case, lines, needle):
    folder = _bad(tmp_path, None if lines == "EMPTY" else lines, images=lines != "EMPTY")
    code, out, err = _cli(monkeypatch, capsys, "evaluate", str(folder))
    assert code == 2, (case, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, (case, err)
    assert needle in err and "Traceback" not in err, (case, err)


def test_missing_folder_from_a_real_process(tmp_path):
    missing = tmp_path / "nope"
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "evaluate", str(missing)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_evaluate_folder_api(tmp_path):
    scenes = sample_scenes(40, seed=8)
    folder = _write_folder(tmp_path / "f", scenes, size=128)
    result = evaluate_folder(folder)
    assert result.n == 40 and result.metrics["overall"] == 1.0
    assert json.loads(result.to_json())["n"] == 40
    with pytest.raises(UserError, match="does not exist"):
        evaluate_folder(tmp_path / "missing")


def test_relation_signal_against_shuffled_prompt_chance():
    from engine.eval.evaluate import relation_signal

    rng = np.random.default_rng(0)
    scenes = sample_scenes(2000, seed=5)
    rel = [s.relation for s in scenes]
    truth = np.array([(s.x1, s.y1, s.x2, s.y2) for s in scenes], dtype=float)
    g = relation_signal(truth, rel)
    assert g["accuracy"] == 1.0 and g["n_placed"] == 2000 and g["offset_px"] > 20
    # Placement that ignores the prompts: the same centres given to other prompts.
    shuffled = truth[rng.permutation(len(truth))]
    g = relation_signal(shuffled, rel)
    assert abs(g["accuracy"] - g["chance"]) < 0.03, g
    assert abs(g["offset_px"]) < 4 * g["offset_se"], g
    # A missing colour counts as a miss, not as a chance hit.
    half = truth.copy()
    half[::2] = np.nan
    g = relation_signal(half, rel)
    assert g["n_placed"] == 1000 and g["accuracy"] == 0.5 and g["chance"] < 0.5
