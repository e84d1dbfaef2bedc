"""labelme conventions: __ignore__ regions, _background_, group_id, rectangles, circles.

The expected values follow labelme's ``labelme2coco`` example: an instance is (label, group_id),
its area is that of the union of its shapes, a circle is (centre, rim point). Independent
references here are the shapes rasterized by hand with numpy and COCOeval run directly.
"""

import json
import math

import numpy as np
import pytest
from helpers.data_helpers import gt_as_predictions_ap, load_tool, write_image
from pycocotools import mask as mask_utils

from detnorm.data.coco import CocoInstanceDataset
from detnorm.data.convert import circle_polygon, labelme_to_coco
from detnorm.evaluation.coco_eval import evaluate_coco


def _shape(label, points, kind="polygon", group_id=None):
    return {"label": label, "points": points, "shape_type": kind, "group_id": group_id}


def _write(root, name, shapes, h=60, w=80):
    write_image(root / f"{name}.png", h, w)
    doc = {"imagePath": f"{name}.png", "imageHeight": h, "imageWidth": w, "shapes": shapes}
    (root / f"{name}.json").write_text(json.dumps(doc))


def _rle_mask(ann, h, w):
    seg = ann["segmentation"]
    rle = seg if isinstance(seg, dict) else mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    return mask_utils.decode(rle)


def test_circle_polygon_within_one_pixel():
    for radius in (0.6, 3.0, 20.0, 250.0):
        pts = circle_polygon(10.0, -4.0, radius)
        assert len(pts) >= 12
        np.testing.assert_allclose(np.hypot(pts[:, 0] - 10, pts[:, 1] + 4), radius)
        n = len(pts)
        assert radius * (1 - math.cos(math.pi / n)) <= 1.0 + 1e-9  # chord-to-arc gap
        if n > 12:  # and no more points than that needs
            assert radius * (1 - math.cos(math.pi / (n - 1))) > 1.0


def test_shape_types_groups_ignore_background(tmp_path):
    _write(
        tmp_path,
        "a",
        [
            _shape("cat", [[50, 40], [10, 10]], "rectangle"),  # corners in either order
            _shape("dog", [[60, 30], [60, 42]], "circle"),  # centre (60, 30), radius 12
            _shape("dog", [[2, 42], [12, 42], [12, 56]], group_id=3),  # one dog, two parts
            _shape("dog", [[20, 44], [30, 44], [30, 56], [20, 56]], group_id=3),
            _shape("cat", [[22, 44], [28, 44], [28, 50]], group_id=3),  # same group, other label
            _shape("__ignore__", [[70, 2], [79, 2], [79, 12], [70, 12]]),
            _shape("_background_", [[0, 0], [5, 0], [5, 5]]),
            _shape("dog", [[1, 1], [3, 3]], "line"),
            _shape("dog", [[1, 1], [3]]),
            _shape("dog", [[1, 1]], "circle"),
        ],
    )
    coco, skipped = labelme_to_coco(tmp_path)
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog"]  # never the two specials
    assert skipped == {
        "label '_background_'": 1,
        "shape_type 'line'": 1,
        "points not a list of [x, y]": 1,
        "circle without exactly 2 points": 1,
    }
    anns = coco["annotations"]
    normal = [a for a in anns if not a["iscrowd"]]
    crowd = [a for a in anns if a["iscrowd"]]
    assert [a["category_id"] for a in normal] == [1, 2, 2, 1]  # (label, group_id) instances
    rect, circle, group, other = normal
    assert rect["bbox"] == [10, 10, 40, 30] and rect["area"] == pytest.approx(40 * 30)
    assert len(rect["segmentation"][0]) == 8  # four corners, readable by pycocotools
    yy, xx = np.mgrid[0:60, 0:80]
    disc = (xx + 0.5 - 60) ** 2 + (yy + 0.5 - 30) ** 2 <= 12**2  # pixel centres in the circle
    got = _rle_mask(circle, 60, 80).astype(bool)
    assert (got ^ disc).sum() <= 2 * math.pi * 12  # differs only in a 1 px band along the rim
    assert circle["bbox"] == pytest.approx([48, 18, 24, 24], abs=0.01)
    assert len(group["segmentation"]) == 2  # multi-polygon instance
    union = _rle_mask(group, 60, 80)
    assert group["area"] == union.sum() and group["bbox"] == [2, 42, 28, 14]
    # the ignore region: one iscrowd RLE per category, never a training target
    assert sorted(a["category_id"] for a in crowd) == [1, 2]
    assert all(isinstance(a["segmentation"], dict) and a["bbox"] == [70, 2, 9, 10] for a in crowd)
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    ds = CocoInstanceDataset(path, tmp_path)
    assert ds[0][1]["labels"].tolist() == [1, 2, 2, 1]
    ap = gt_as_predictions_ap(path)
    assert ap["bbox"] == pytest.approx(1.0) and ap["segm"] == pytest.approx(1.0)


def test_ignore_region_is_ignored_by_cocoeval(tmp_path):
    """A detection inside an __ignore__ region costs nothing; outside it is a false positive."""
    _write(
        tmp_path,
        "a",
        [
            _shape("cat", [[5, 5], [30, 30]], "rectangle"),
            _shape("__ignore__", [[40, 5], [75, 5], [75, 50], [40, 50]]),
        ],
    )
    coco, _ = labelme_to_coco(tmp_path)
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    perfect = {"image_id": 1, "category_id": 1, "bbox": [5, 5, 25, 25], "score": 0.9}
    inside = {"image_id": 1, "category_id": 1, "bbox": [45, 10, 20, 20], "score": 0.95}
    outside = {**inside, "bbox": [5, 35, 20, 20]}
    with_inside = evaluate_coco(path, [perfect, inside], iou_types="bbox", backend="pycocotools")
    with_outside = evaluate_coco(path, [perfect, outside], iou_types="bbox", backend="pycocotools")
    assert with_inside["bbox"]["AP"] == pytest.approx(100.0)
    assert with_outside["bbox"]["AP"] < 100.0


def test_labels_file_like_labelme_and_tool(tmp_path, capsys):
    _write(tmp_path / "ann", "a", [_shape("dog", [[5, 5], [30, 5], [18, 25]]),
                                   _shape("__ignore__", [[40, 5], [60, 5], [50, 25]])])  # fmt: skip
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\n_background_\ndog\ncat\n")  # labelme's labels.txt layout
    out = tmp_path / "coco.json"
    main = load_tool("convert_labelme").main
    assert main([str(tmp_path / "ann"), "-o", str(out), "--labels-file", str(labels)]) == 0
    coco = json.loads(out.read_text())
    assert [(c["id"], c["name"]) for c in coco["categories"]] == [(1, "dog"), (2, "cat")]
    assert sum(a["iscrowd"] for a in coco["annotations"]) == 2
    assert "1 '__ignore__' regions written as iscrowd: 1" in capsys.readouterr().out
    assert main([str(tmp_path / "missing"), "-o", str(out)]) == 2
    assert "missing: no such file or folder" in capsys.readouterr().err
