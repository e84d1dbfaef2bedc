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
