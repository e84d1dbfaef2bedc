"""``detnorm-analyze``: every output against numbers computed independently here.

PR points are checked against pycocotools' own ``eval["precision"]``, the confusion matrix and
the worst-image ranking against a hand-built case whose counts are worked out below, and the
per-category AP against ``evaluate_coco``.
"""

import contextlib
import csv
import io
import json

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import yaml
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detnorm.cli.analyze import main
from detnorm.evaluation.coco_eval import evaluate_coco

CATS = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]  # ids that are not 1..K


def _rle(box, h=64, w=64):
    x, y, bw, bh = box
    m = np.zeros((h, w), np.uint8)
    m[y : y + bh, x : x + bw] = 1
    rle = mask_util.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    return rle


def _gt(ann_id, image_id, cat, box, crowd=0):
    x, y, w, h = box
    seg = _rle(box) if crowd else [[x, y, x + w, y, x + w, y + h, x, y + h]]
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": list(box),
            "area": w * h, "iscrowd": crowd, "segmentation": seg}  # fmt: skip


# image 1: cat A found; dog B detected as a cat; a dog detection of nothing.
# image 2: cat C missed (its only detection scores 0.3, under the 0.5 threshold).
# image 3: dog D found; a cat detection inside the crowd region is ignored.
GT = [_gt(1, 1, 3, (2, 2, 20, 20)), _gt(2, 1, 7, (30, 30, 20, 20)), _gt(3, 2, 3, (5, 5, 30, 30)),
      _gt(4, 3, 7, (10, 10, 20, 20)), _gt(5, 3, 3, (40, 40, 20, 20), crowd=1),
      _gt(6, 3, 7, (40, 40, 20, 20), crowd=1)]  # fmt: skip
DETS = [(1, 3, (2, 2, 20, 20), 0.9), (1, 3, (30, 30, 20, 20), 0.8), (1, 7, (40, 0, 10, 10), 0.7),
        (2, 3, (5, 5, 30, 30), 0.3), (3, 7, (10, 10, 20, 20), 0.95), (3, 3, (42, 42, 10, 10), 0.9),
        (3, 7, (11, 11, 20, 19), 0.4)]  # fmt: skip
# rows: ground truth cat, dog, background; columns: predicted cat, dog, background
EXPECTED_CONFUSION = [[1, 0, 1], [1, 1, 0], [0, 1, 0]]


@pytest.fixture
def run_dir(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in (1, 2, 3):
        cv2.imwrite(str(images / f"{i}.png"), np.full((64, 64, 3), 40 * i, np.uint8))
    gt = {"images": [{"id": i, "file_name": f"{i}.png", "height": 64, "width": 64} for i in (1, 2, 3)],
          "annotations": GT, "categories": CATS}  # fmt: skip
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps(gt))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        yaml.safe_dump({"val_ann": str(ann), "val_images": str(images)})
    )
    bbox = [{"image_id": i, "category_id": c, "bbox": list(b), "score": s} for i, c, b, s in DETS]
    segm = [{"image_id": i, "category_id": c, "segmentation": _rle(b), "score": s}
            for i, c, b, s in DETS]  # fmt: skip
    (run / "results_bbox.json").write_text(json.dumps(bbox))
    (run / "results_segm.json").write_text(json.dumps(segm))
    return run, ann


def _reference_precision(ann, results_path, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        ev = COCOeval(gt, gt.loadRes(str(results_path)), iou_type)
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"], ev.params.catIds


def test_analyze_outputs_match_independent_numbers(run_dir, capsys):
    run, ann = run_dir
    assert main([str(run), "--backend", "faster", "--worst", "5"]) == 0
    out = run / "analysis"
    assert f"analysis: {out / 'analysis.md'}" in capsys.readouterr().out
    # PR points == pycocotools' eval["precision"][iou, :, category, area all, maxDets 100]
    with open(out / "pr_curves.csv") as f:
        rows = list(csv.DictReader(f))
    for iou_type in ("bbox", "segm"):
        precision, cat_ids = _reference_precision(ann, run / f"results_{iou_type}.json", iou_type)
        for t, iou in ((0, 0.5), (5, 0.75)):
            ref = {c["name"]: precision[t, :, cat_ids.index(c["id"]), 0, 2] for c in CATS}
            ref["mean"] = np.mean(list(ref.values()), axis=0)
            for name, expected in ref.items():
                got = [float(r["precision"]) for r in rows if r["iou_type"] == iou_type
                       and float(r["iou"]) == iou and r["category"] == name]  # fmt: skip
                np.testing.assert_allclose(got, expected, atol=1e-6)
        assert Image.open(out / f"pr_{iou_type}.png").size[0] > 400
    # confusion matrix == the hand count, for boxes and masks alike
    for iou_type in ("bbox", "segm"):
        with open(out / f"confusion_{iou_type}.csv") as f:
            table = list(csv.reader(f))
        assert table[0][1:] == ["cat", "dog", "background"]
        assert [[int(v) for v in r[1:]] for r in table[1:]] == EXPECTED_CONFUSION
        assert Image.open(out / f"confusion_{iou_type}.png").format == "PNG"
    # worst images: image 2 (F1 0: one cat missed), then image 1 (TP 1, FP 2, FN 1: F1 0.4);
    # image 3 is perfect (the crowd-region detection is ignored) and is not listed
    md = (out / "analysis.md").read_text()
    assert "| 1 | 2 | 2.png | 1 | 0 | 0 | 0 | 1 | 0.00 | [png](worst_01.png) |" in md
    assert "| 2 | 1 | 1.png | 2 | 3 | 1 | 2 | 1 | 0.40 | [png](worst_02.png) |" in md
    assert not (out / "worst_03.png").exists()
    left_right = Image.open(out / "worst_01.png")
    assert left_right.size[0] > 1.5 * left_right.size[1]  # two panels side by side
    # per-category AP table == evaluate_coco (pycocotools) per category
    metrics = evaluate_coco(ann, {t: str(run / f"results_{t}.json") for t in ("bbox", "segm")},
                            backend="pycocotools")  # fmt: skip
    for name in ("cat", "dog"):
        b, s = (metrics[t]["per_category"][name] for t in ("bbox", "segm"))
        assert f"| {name} | {b:.1f} | {s:.1f} |" in md
    for link in ("pr_bbox.png", "pr_segm.png", "pr_curves.csv", "confusion_bbox.png",
                 "confusion_segm.csv", "worst_02.png"):  # fmt: skip
        assert f"({link})" in md and (out / link).is_file()


def test_analyze_bad_input_is_one_line(tmp_path, run_dir, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    assert "no results_bbox.json or results_segm.json" in capsys.readouterr().err
    run, ann = run_dir
    (run / "config.yaml").unlink()
    assert main([str(run)]) == 2
    assert "--ann: ground truth not named" in capsys.readouterr().err
    bad = json.loads((run / "results_bbox.json").read_text())
    bad[0]["category_id"] = 99
    (run / "results_bbox.json").write_text(json.dumps(bad))
    assert main([str(run), "--ann", str(ann)]) == 2
    err = capsys.readouterr().err.strip()
    assert "category ids not in the ground truth: 99" in err and "\n" not in err


def test_analyze_without_images_lists_worst(run_dir):
    run, ann = run_dir
    (run / "config.yaml").write_text(yaml.safe_dump({"val_ann": str(ann)}))
    (run / "results_segm.json").unlink()
    assert main([str(run), "--output-dir", str(run / "a"), "--backend", "pycocotools"]) == 0
    md = (run / "a" / "analysis.md").read_text()
    assert "| 1 | 2 | 2.png | 1 | 0 | 0 | 0 | 1 | 0.00 | - |" in md
    assert not list((run / "a").glob("worst_*.png")) and not (run / "a" / "pr_segm.png").exists()


@pytest.mark.slow  # about 50 s on the shared 2-core machine; the tests above are the fast ones
def test_training_summary_and_analyze_on_a_real_run(tmp_path, capsys):
    """A 2-step run prints per-category AP equal to its metrics.json, and analyze reads it."""
    from detnorm.cli.train import main as train
    from detnorm.data.synthetic import generate_dataset

    data = tmp_path / "data"
    generate_dataset(data, seed=0, num_train=2, num_val=2, image_size=64)
    cfg = {"depth": 18, "train_scales": [64], "max_size": 96, "test_size": 64, "batch_size": 2,
           "num_workers": 0, "max_steps": 2, "accelerator": "cpu", "norm": "gn",
           "model_kwargs": {"rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50,
                            "box_detections_per_img": 20, "box_score_thresh": 0.0}}  # fmt: skip
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    args = ["--config", str(tmp_path / "tiny.yaml"), "--data", str(data), "--output-dir", str(run)]
    assert train(args) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert "per-category AP:" in printed
    for name, ap in metrics["bbox"]["per_category"].items():
        segm = metrics["segm"]["per_category"][name]
        cells = " | ".join("-" if v is None else f"{v:.1f}" for v in (ap, segm))
        assert f"| {name} | {cells} |" in printed
    assert main([str(run), "--worst", "2"]) == 0
    md = (run / "analysis" / "analysis.md").read_text()
    assert "## Confusion matrix, segm" in md and (run / "analysis" / "pr_segm.png").is_file()


def test_pr_curves_keep_every_detection_of_a_dense_image():
    """150 objects found exactly: precision 1 at every recall (a cap of 100 would end at 2/3)."""
    from detnorm.analysis.error_analysis import pr_curves, run_cocoeval

    boxes = [(4 * (k % 15), 4 * (k // 15), 3, 3) for k in range(150)]
    gt = {"images": [{"id": 1, "file_name": "a.png", "height": 64, "width": 64}],
          "annotations": [_gt(k + 1, 1, 3, b) for k, b in enumerate(boxes)],
          "categories": CATS[:1]}  # fmt: skip
    dets = [{"image_id": 1, "category_id": 3, "bbox": list(b), "score": 1 - k / 1000}
            for k, b in enumerate(boxes)]  # fmt: skip
    for backend in ("pycocotools", "faster"):
        curves = pr_curves(run_cocoeval(gt, dets, "bbox", backend=backend))
        np.testing.assert_allclose(curves[0.5]["cat"], 1.0)
        np.testing.assert_allclose(curves[0.75]["mean"], 1.0)
