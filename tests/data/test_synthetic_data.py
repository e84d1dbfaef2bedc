"""Synthetic generator: deterministic, valid COCO, occlusion-aware masks, atomic writes."""

import hashlib
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from detnorm.data import synthetic
from detnorm.data.synthetic import ensure_default_dataset, generate_dataset, render_image


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_deterministic_for_a_seed(tmp_path):
    a = generate_dataset(tmp_path / "a", seed=3, num_train=4, num_val=2, image_size=64)
    b = generate_dataset(tmp_path / "b", seed=3, num_train=4, num_val=2, image_size=64)
    c = generate_dataset(tmp_path / "c", seed=4, num_train=4, num_val=2, image_size=64)
    assert _digest(a) == _digest(b) != _digest(c)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_annotations_match_rendered_masks_and_vary():
    image, instances = render_image(0, 0, 5, image_size=128)
    assert image.dtype == np.uint8 and image.ndim == 3
    owners = np.stack([m for _, m in instances]).astype(int)
    assert owners.sum(0).max() == 1  # occlusion: visible masks never overlap
    sizes = []
    shapes = set()
    for i in range(30):
        image, instances = render_image(0, 0, i, image_size=128)
        shapes.add(image.shape[:2])
        sizes += [int(m.sum()) for _, m in instances]
    assert len(shapes) == 3  # square, portrait, landscape
    assert min(sizes) < 32**2 / 4 and max(sizes) > 32**2  # small and large objects


def test_coco_json_is_consistent(tmp_path):
    root = generate_dataset(tmp_path / "d", num_train=3, num_val=1, image_size=64)
    coco = json.loads((root / "annotations" / "train.json").read_text())
    assert [c["id"] for c in coco["categories"]] == list(range(1, 7))
    assert min(a["id"] for a in coco["annotations"]) == 1
    for ann in coco["annotations"]:
        rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
        assert mask_utils.area(rle) == ann["area"] > 0
        assert (root / "images" / coco["images"][ann["image_id"] - 1]["file_name"]).is_file()


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_write_split", boom)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path / "x", num_train=2, num_val=1)
    assert list(tmp_path.iterdir()) == []


def test_ensure_default_dataset_generates_once(tmp_path, monkeypatch):
    monkeypatch.setattr(
        synthetic, "DEFAULTS", {"seed": 0, "num_train": 2, "num_val": 1, "image_size": 48}
    )
    root = ensure_default_dataset(tmp_path / "syn")
    stamp = (root / "annotations" / "train.json").stat().st_mtime_ns
    assert ensure_default_dataset(tmp_path / "syn") == root
    assert (root / "annotations" / "train.json").stat().st_mtime_ns == stamp
    monkeypatch.setenv("DETNORM_DATA", str(tmp_path / "env"))
    assert synthetic.default_root() == tmp_path / "env" / "synthetic"


def test_object_count_and_size_knobs(tmp_path):
    """objects=(lo, hi) bounds the objects drawn, min_object the smallest; defaults keep the
    embedded dataset's meta.json, other values are recorded and trigger regeneration."""
    kwargs = {"num_train": 12, "num_val": 2, "image_size": 96, "objects": (2, 3), "min_object": 20}
    root = synthetic.ensure_dataset(tmp_path / "easy", **kwargs)
    coco = json.loads((root / "annotations" / "train.json").read_text())
    per_image = np.bincount([a["image_id"] for a in coco["annotations"]], minlength=13)[1:]
    assert per_image.max() <= 3 and per_image.sum() > 12
    # an object is at least min_object across before occlusion; what is left keeps >= 12 %
    assert min(a["area"] for a in coco["annotations"]) >= 0.12 * 0.5 * 20 * 20 * 0.5
    meta = json.loads((root / "meta.json").read_text())
    assert meta["objects"] == [2, 3] and meta["min_object"] == 20
    stamp = (root / "meta.json").stat().st_mtime_ns
    assert synthetic.ensure_dataset(tmp_path / "easy", **kwargs) == root
    assert (root / "meta.json").stat().st_mtime_ns == stamp  # same keywords: reused
    synthetic.ensure_dataset(tmp_path / "easy", **(kwargs | {"min_object": 30}))
    assert json.loads((root / "meta.json").read_text())["min_object"] == 30  # regenerated
    assert "objects" not in synthetic.dataset_meta()  # generate_dataset's defaults
    assert "class_colors" not in synthetic.dataset_meta(**kwargs)  # recorded only when set
    assert synthetic.dataset_meta(**synthetic.DEFAULTS)["class_colors"] is True
    assert synthetic.dataset_meta(clutter=False)["clutter"] is False
    with pytest.raises(ValueError, match="objects must be"):
        generate_dataset(tmp_path / "bad", num_train=1, num_val=1, objects=(3, 2))


def test_embedded_images_are_pinned_and_clean_scenes_differ():
    """The generator's options leave its default scenes' pixels as they were (digest taken
    before the options existed), so datasets made earlier (the study's) regenerate identically;
    clutter=False draws a different, clean scene."""
    image, instances = render_image(0, 0, 0)
    assert hashlib.sha256(image.tobytes()).hexdigest()[:16] == "7f2549bc530d5acf"
    assert len(instances) == 9
    clean, one = render_image(0, 0, 1, image_size=96, objects=(1, 1), min_object=20, clutter=False)
    busy, _ = render_image(0, 0, 1, image_size=96, objects=(1, 1), min_object=20)
    assert len(one) == 1 and one[0][1].sum() > 0 and not np.array_equal(clean, busy)
