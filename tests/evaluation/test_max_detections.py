"""Dense scenes: COCOeval's detections-per-image limit (``maxDets``) follows ``--max-detections``.

References: pycocotools' COCOeval run directly (its ``summarize`` at the default limit, and its
accumulated arrays at other limits) and perfect predictions, which must score 100.
"""

import contextlib
import io

import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detnorm.engine.trainer_options import dense_scene_warning
from detnorm.evaluation.coco_eval import BACKENDS, STAT_NAMES, evaluate_coco
from detnorm.evaluation.stats import eval_max_dets, stat_names
from detnorm.evaluation.tables import format_metrics_table


def _backends():
    out = ["pycocotools"]
    with contextlib.suppress(ImportError):
        import faster_coco_eval  # noqa: F401

        out.append("faster")
    return out


def grid_scene(n: int, size: int = 640, cell: int = 32):
    """One image with ``n`` disjoint 20x20 squares on a grid: (GT dict, bbox results, segm
    results), the results being the ground truth itself with distinct scores."""
    per_row = size // cell
    anns, boxes, segms = [], [], []
    for k in range(n):
        x, y = (k % per_row) * cell + 6, (k // per_row) * cell + 6
        m = np.zeros((size, size), np.uint8, order="F")
        m[y : y + 20, x : x + 20] = 1
        rle = mask_util.encode(m)
        rle["counts"] = rle["counts"].decode("ascii")
        poly = [[x, y, x + 20, y, x + 20, y + 20, x, y + 20]]
        anns.append({"id": k + 1, "image_id": 1, "category_id": 1, "bbox": [x, y, 20, 20],
                     "area": 400, "iscrowd": 0, "segmentation": poly})  # fmt: skip
        score = 1.0 - k / (2 * n)
        boxes.append({"image_id": 1, "category_id": 1, "bbox": [x, y, 20, 20], "score": score})
        segms.append({"image_id": 1, "category_id": 1, "segmentation": rle, "score": score})
    gt = {"images": [{"id": 1, "width": size, "height": size, "file_name": "a.png"}],
          "annotations": anns, "categories": [{"id": 1, "name": "cell"}]}  # fmt: skip
    return gt, boxes, segms


@pytest.mark.parametrize("backend", _backends())
def test_perfect_predictions_on_300_objects_score_100(backend):
    gt, boxes, segms = grid_scene(300)
    m = evaluate_coco(gt, {"bbox": boxes, "segm": segms}, backend=backend, max_dets=300)
    for iou_type in ("bbox", "segm"):
        assert m[iou_type]["AP"] == pytest.approx(100.0), iou_type
        assert m[iou_type]["AP50"] == pytest.approx(100.0)
        assert m[iou_type]["AR300"] == pytest.approx(100.0)
        assert "AR100" not in m[iou_type]
        assert m[iou_type]["per_category"]["cell"] == pytest.approx(100.0)
    capped = evaluate_coco(gt, {"bbox": boxes}, iou_types="bbox", backend=backend)
    assert capped["bbox"]["AR100"] == pytest.approx(100 / 3)  # 100 of 300 objects can be found
    assert capped["bbox"]["AP"] < 40


def _direct(gt, dets, max_dets=None):
    """pycocotools by hand: (summarize stats x100, precision array)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes([dict(d) for d in dets]), "bbox")
        if max_dets:
            ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats * 100, ev.eval["precision"]


def coco_like(seed=0):
    """COCO-like GT (4 categories, all sizes, a crowd region, 1-30 objects per image) and noisy
    predictions with false positives, up to 60 per image."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for image_id in range(1, 13):
        w, h = int(rng.integers(200, 640)), int(rng.integers(200, 480))
        images.append({"id": image_id, "width": w, "height": h, "file_name": f"{image_id}.png"})
        for _ in range(int(rng.integers(1, 31))):
            bw, bh = rng.uniform(4, w / 2), rng.uniform(4, h / 2)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            cat = int(rng.integers(1, 5))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat,
                         "bbox": [x, y, bw, bh], "area": bw * bh,
                         "iscrowd": int(rng.random() < 0.03)})  # fmt: skip
            if rng.random() < 0.8:
                jitter = rng.normal(0, 0.08, 4) * [bw, bh, bw, bh]
                box = [x + jitter[0], y + jitter[1], bw + jitter[2], bh + jitter[3]]
                dets.append({"image_id": image_id, "category_id": cat, "bbox": box,
                             "score": float(rng.random())})  # fmt: skip
        for _ in range(int(rng.integers(0, 30))):  # false positives
            bw, bh = rng.uniform(4, w / 3), rng.uniform(4, h / 3)
            dets.append({"image_id": image_id, "category_id": int(rng.integers(1, 5)),
                         "bbox": [rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh],
                         "score": float(rng.random())})  # fmt: skip
    cats = [{"id": i, "name": f"c{i}"} for i in range(1, 5)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


@pytest.mark.parametrize("backend", _backends())
def test_the_100_limit_table_equals_pycocotools(backend):
    gt, dets = coco_like()
    ref, _ = _direct(gt, dets)
    ours = evaluate_coco(gt, dets, iou_types="bbox", backend=backend)["bbox"]
    assert [ours[s] for s in STAT_NAMES] == pytest.approx(list(ref), abs=1e-9)
    assert (
        format_metrics_table({"bbox": ours}).splitlines()[0]
        == "| | " + " | ".join(STAT_NAMES) + " |"
    )


@pytest.mark.parametrize("backend", _backends())
def test_other_limits_equal_pycocotools_arrays(backend):
    """At maxDets [1, 10, 20] pycocotools' stats 1-11 are right (its first stat is computed at
    a fixed 100, so -1 here); AP is the mean of its precision at the last limit."""
    gt, dets = coco_like(seed=1)
    ref, precision = _direct(gt, dets, max_dets=20)
    ours = evaluate_coco(gt, dets, iou_types="bbox", backend=backend, max_dets=20)["bbox"]
    names = stat_names(20)
    assert names[8] == "AR20"
    assert [ours[s] for s in names[1:]] == pytest.approx(list(ref[1:]), abs=1e-9)
    p = precision[:, :, :, 0, -1]
    assert ours["AP"] == pytest.approx(100 * p[p > -1].mean(), abs=1e-9)
    # fewer detections kept than at 100: recall cannot grow
    at_100 = evaluate_coco(gt, dets, iou_types="bbox", backend=backend)["bbox"]
    assert ours["AR20"] <= at_100["AR100"] and ours["AR10"] == at_100["AR10"]
    table = format_metrics_table({"bbox": ours}).splitlines()[0]
    assert table.startswith("| maxDets 20 | AP |") and "| AR20 |" in table


def test_limits_below_10_are_refused():
    gt, boxes, _ = grid_scene(3)
    with pytest.raises(ValueError, match="max_dets must be an integer >= 10"):
        evaluate_coco(gt, boxes, iou_types="bbox", backend=BACKENDS[0], max_dets=5)


def test_models_are_evaluated_at_their_limit_never_below_100():
    assert [eval_max_dets(n) for n in (20, 100, 101, 300)] == [100, 100, 101, 300]


def test_dense_scene_warning_names_the_largest_count():
    gt, _, _ = grid_scene(120)
    gt["images"].append({"id": 2, "width": 64, "height": 64, "file_name": "b.png"})
    gt["annotations"] += [{"id": 1000 + k, "image_id": 2, "category_id": 1, "bbox": [0, 0, 4, 4],
                           "area": 16, "iscrowd": int(k >= 90)} for k in range(140)]  # fmt: skip
    warning = dense_scene_warning(gt, 100)
    assert "1 validation image(s)" in warning and "largest: 120 objects, image id 1" in warning
    assert "--max-detections" in warning
    assert "2 validation image(s)" in dense_scene_warning(gt, 89)  # image 2: 90 non-crowd
    assert dense_scene_warning(gt, 120) is None


def test_eval_cli_takes_max_detections(tmp_path, capsys):
    import json

    from detnorm.cli.eval import main

    gt, boxes, _ = grid_scene(300)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(boxes))
    argv = ["--ann", str(tmp_path / "gt.json"), "--results", str(tmp_path / "res.json")]
    assert main([*argv, "--max-detections", "300"]) == 0
    assert capsys.readouterr().out.startswith("| maxDets 300 | AP |")
    assert json.loads((tmp_path / "metrics.json").read_text())["bbox"]["AP"] == pytest.approx(100)
    assert main(argv) == 0  # COCO's default 100
    assert json.loads((tmp_path / "metrics.json").read_text())["bbox"]["AP"] < 40
    capsys.readouterr()
    assert main([*argv, "--max-detections", "5"]) == 2
    assert "--max-detections: must be an integer >= 10" in capsys.readouterr().err
