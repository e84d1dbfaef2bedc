"""COCO evaluation: conversion, parity with direct pycocotools, the annotation-id-0 fix, I/O."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from helpers.coco_eval_data import LABEL_TO_CAT, make_gt, make_outputs
from helpers.dist_utils import run_distributed
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detnorm.evaluation import (
    STAT_NAMES,
    evaluate_coco,
    gather_predictions,
    predictions_to_coco,
    save_results,
)
from detnorm.evaluation import coco_eval as ev
from detnorm.evaluation.tables import format_metrics_table, format_per_category_table
from detnorm.io import write_json_atomic


def direct_cocoeval(gt_path, results_path, iou_type):
    """pycocotools exactly as its README runs it, on files."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        e = COCOeval(gt, gt.loadRes(str(results_path)), iou_type)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e


def assert_stats_equal(ours: dict, stats, tol=1e-9):
    for name, s in zip(STAT_NAMES, stats, strict=False):
        if s < 0:
            assert ours[name] is None, name
        else:
            assert ours[name] == pytest.approx(100 * s, abs=tol), name


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    dataset, masks = make_gt()
    outputs, image_ids = make_outputs(dataset, masks)
    results = predictions_to_coco(outputs, image_ids, LABEL_TO_CAT)
    root = tmp_path_factory.mktemp("coco")
    write_json_atomic(root / "gt.json", dataset)
    paths = save_results(root, results, {})
    return {"dataset": dataset, "results": results, "gt_path": root / "gt.json", "paths": paths}


def test_predictions_to_coco_against_reference():
    h, w = 7, 9
    probs = torch.rand(3, 1, h, w)
    probs[0, 0, 2, 3] = 0.51
    probs[0, 0, 2, 4] = 0.49
    out = {
        "boxes": torch.tensor([[1.0, 2.0, 5.5, 6.0], [0.0, 0.0, 9.0, 7.0], [3.0, 1.0, 4.0, 2.5]]),
        "scores": torch.tensor([0.9, 0.5, 0.1]),
        "labels": torch.tensor([2, 1, 3]),
        "masks": probs,
    }
    empty = {k: v[:0] for k, v in out.items()}
    res = predictions_to_coco([out, empty], [42, 43], LABEL_TO_CAT)
    assert [r["category_id"] for r in res["bbox"]] == [3, 1, 7]
    assert all(r["image_id"] == 42 for r in res["bbox"] + res["segm"])
    assert res["bbox"][0]["bbox"] == [1.0, 2.0, 4.5, 4.0]  # xywh
    assert res["bbox"][2]["score"] == pytest.approx(0.1)
    for i, r in enumerate(res["segm"]):
        assert isinstance(r["segmentation"]["counts"], str)
        decoded = mask_util.decode(r["segmentation"])
        np.testing.assert_array_equal(decoded, (probs[i, 0] > 0.5).numpy().astype(np.uint8))
    json.dumps(res)  # JSON-ready
    assert predictions_to_coco([out], [1], LABEL_TO_CAT, iou_types=("bbox",)).keys() == {"bbox"}
    with pytest.raises(ValueError, match="label 3"):
        predictions_to_coco([out], [1], {1: 1, 2: 3})
    with pytest.raises(ValueError, match="allowed: bbox, segm"):
        predictions_to_coco([out], [1], LABEL_TO_CAT, iou_types=("keypoints",))


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_parity_with_direct_pycocotools(synthetic, iou_type):
    assert any(a["iscrowd"] for a in synthetic["dataset"]["annotations"])
    direct = direct_cocoeval(synthetic["gt_path"], synthetic["paths"][iou_type], iou_type)
    assert 0.1 < direct.stats[0] < 0.9 and direct.stats[1] > 0.3  # non-trivial scores
    for gt in (synthetic["gt_path"], COCO_quiet(synthetic["gt_path"])):
        metrics = evaluate_coco(gt, synthetic["paths"][iou_type], iou_types=(iou_type,))
        assert_stats_equal(metrics[iou_type], direct.stats)
        per_cat = metrics[iou_type]["per_category"]
        assert list(per_cat) == ["cat", "dog", "bird"]
        for k, name in enumerate(per_cat):
            p = direct.eval["precision"][:, :, k, 0, 2]
            assert per_cat[name] == pytest.approx(100 * p[p > -1].mean(), abs=1e-9)
    # Same numbers from in-memory lists, both iou types at once.
    both = evaluate_coco(synthetic["dataset"], synthetic["results"])
    assert_stats_equal(both[iou_type], direct.stats)


def COCO_quiet(path):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_annotation_id_zero_scores_100():
    dataset, _ = make_gt(seed=3, first_id=0)
    assert dataset["annotations"][0]["id"] == 0
    gt = COCO_quiet_from(dataset)
    results = {"bbox": [], "segm": []}
    for ann in dataset["annotations"]:
        if not ann["iscrowd"]:
            base = {"image_id": ann["image_id"], "category_id": ann["category_id"], "score": 1.0}
            rle = gt.annToRLE(ann)
            counts = rle["counts"]
            counts = counts.decode("ascii") if isinstance(counts, bytes) else counts
            rle = {"size": rle["size"], "counts": counts}
            results["bbox"].append({**base, "bbox": ann["bbox"]})
            results["segm"].append({**base, "segmentation": rle})
    snapshot = copy.deepcopy(gt.dataset)
    results_snapshot = copy.deepcopy(results)
    metrics = evaluate_coco(gt, results)
    for iou_type in ("bbox", "segm"):
        assert metrics[iou_type]["AP"] == pytest.approx(100.0)
        assert all(v == pytest.approx(100.0) for v in metrics[iou_type]["per_category"].values())
        # Raw pycocotools on the same data misses the match to annotation 0.
        with contextlib.redirect_stdout(io.StringIO()):
            raw_gt = COCO_quiet_from(copy.deepcopy(dataset))
            raw = COCOeval(raw_gt, raw_gt.loadRes(copy.deepcopy(results[iou_type])), iou_type)
            raw.evaluate()
            raw.accumulate()
            raw.summarize()
        assert raw.stats[0] < 0.99
    assert gt.dataset == snapshot and gt.anns[0]["id"] == 0  # the caller's COCO is untouched
    assert results == results_snapshot


def COCO_quiet_from(dataset):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    return coco


def test_renumbering_changes_nothing_else(synthetic):
    shifted = copy.deepcopy(synthetic["dataset"])
    for ann in shifted["annotations"]:
        ann["id"] = 1000 - ann["id"]  # another order, all positive
    assert evaluate_coco(shifted, synthetic["results"]) == evaluate_coco(
        synthetic["dataset"], synthetic["results"]
    )


def test_empty_results_score_zero(synthetic):
    for backend in ev.BACKENDS:
        if backend == "faster":
            pytest.importorskip("faster_coco_eval")
        metrics = evaluate_coco(synthetic["gt_path"], {"bbox": [], "segm": []}, backend=backend)
        for m in metrics.values():
            assert m["AP"] == 0.0 and m["AR100"] == 0.0
            assert all(v in (0.0, None) for k, v in m.items() if k != "per_category")
            assert set(m["per_category"].values()) == {0.0}


def test_faster_backend_matches_pycocotools(synthetic):
    pytest.importorskip("faster_coco_eval")
    ref = evaluate_coco(synthetic["gt_path"], synthetic["results"], backend="pycocotools")
    fast = evaluate_coco(synthetic["gt_path"], synthetic["results"], backend="faster")
    for iou_type in ("bbox", "segm"):
        for name in STAT_NAMES:
            a, b = ref[iou_type][name], fast[iou_type][name]
            assert (a is None and b is None) or abs(a - b) <= 1e-6 * 100, (iou_type, name)
        for name, a in ref[iou_type]["per_category"].items():
            assert abs(a - fast[iou_type]["per_category"][name]) <= 1e-6 * 100


def test_default_backend_falls_back_to_pycocotools(synthetic, monkeypatch, capsys):
    assert ev.DEFAULT_BACKEND == "faster"
    ref = evaluate_coco(synthetic["gt_path"], synthetic["results"], backend="pycocotools")
    real_find_spec = ev.importlib.util.find_spec
    monkeypatch.setattr(ev.importlib.util, "find_spec",
                        lambda name, *a: None if name == "faster_coco_eval" else real_find_spec(name, *a))  # fmt: skip
    monkeypatch.setattr(ev, "_fallback_noticed", False)
    assert ev.resolve_backend("faster") == "pycocotools"
    assert evaluate_coco(synthetic["gt_path"], synthetic["results"]) == ref
    err = capsys.readouterr().err
    assert err.count("faster-coco-eval is not installed") == 1 and len(err.splitlines()) == 1


def test_invalid_arguments(synthetic):
    gt = synthetic["dataset"]
    with pytest.raises(ValueError, match="allowed: pycocotools, faster"):
        evaluate_coco(gt, synthetic["results"], backend="detectron")
    with pytest.raises(ValueError, match="image ids not in the ground truth: 999"):
        evaluate_coco(gt, [{"image_id": 999, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}])
    with pytest.raises(ValueError, match="category ids not in the ground truth: 2"):
        evaluate_coco(gt, [{"image_id": 10, "category_id": 2, "bbox": [0, 0, 1, 1], "score": 1}])
    with pytest.raises(ValueError, match="lack 'segmentation'"):
        evaluate_coco(gt, synthetic["results"]["bbox"], iou_types=("segm",))
    with pytest.raises(ValueError, match="no entry for iou type"):
        evaluate_coco(gt, {"bbox": []})
    no_masks = {**gt, "annotations": [{**a, "segmentation": None} for a in gt["annotations"]]}
    del no_masks["annotations"][0]["segmentation"]
    with pytest.raises(ValueError, match="annotation 1 lacks segmentation"):
        evaluate_coco(no_masks, synthetic["results"])
    assert evaluate_coco(no_masks, synthetic["results"], iou_types="bbox").keys() == {"bbox"}


def test_write_json_atomic_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "sub" / "m.json"
    write_json_atomic(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    for bad in ({"a": math.nan}, {"a": object()}):
        with pytest.raises((ValueError, TypeError)):
            write_json_atomic(path, bad)
        assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]  # no temp files left


def test_save_results_and_tables(synthetic, tmp_path):
    metrics = evaluate_coco(synthetic["dataset"], synthetic["results"])
    paths = save_results(tmp_path, synthetic["results"], metrics)
    assert {p.name for p in tmp_path.iterdir()} == {
        "results_bbox.json",
        "results_segm.json",
        "metrics.json",
    }
    assert json.loads(paths["metrics"].read_text()) == metrics
    assert json.loads(paths["segm"].read_text()) == synthetic["results"]["segm"]

    table = format_metrics_table(metrics).splitlines()
    assert table[0] == "| | " + " | ".join(STAT_NAMES) + " |"
    bbox_cells = table[2].strip("| ").split(" | ")
    assert bbox_cells[0] == "bbox" and table[3].startswith("| segm |")
    assert bbox_cells[1] == f"{metrics['bbox']['AP']:.1f}"
    assert "| - |" in format_metrics_table({"bbox": {**metrics["bbox"], "APs": None}})
    with_step = {**metrics, "step": 100}  # extra top-level keys (the training loop adds one)
    assert format_metrics_table(with_step) == format_metrics_table(metrics)
    assert format_per_category_table(with_step) == format_per_category_table(metrics)
    per_cat = format_per_category_table(metrics).splitlines()
    assert per_cat[0] == "| category | bbox AP | segm AP |"
    assert per_cat[2] == (
        f"| cat | {metrics['bbox']['per_category']['cat']:.1f} "
        f"| {metrics['segm']['per_category']['cat']:.1f} |"
    )


def test_gather_predictions_identity_without_process_group():
    items = [{"image_id": 1}, {"image_id": 1}, {"image_id": 2}]
    assert gather_predictions(items) == items


def _gather_worker(rank, world_size):
    # DistributedSampler-style padding: image 3 is seen by both ranks.
    local = {
        0: [{"image_id": 1, "score": 0.9}, {"image_id": 1, "score": 0.2}, {"image_id": 3, "r": 0}],
        1: [{"image_id": 2, "score": 0.5}, {"image_id": 3, "r": 1}, {"image_id": 3, "r": 1}],
    }[rank]
    return gather_predictions(local)


def test_gather_predictions_two_ranks():
    out = run_distributed(_gather_worker, world_size=2, timeout=120.0)
    expected = [
        {"image_id": 1, "score": 0.9},
        {"image_id": 1, "score": 0.2},
        {"image_id": 3, "r": 0},
        {"image_id": 2, "score": 0.5},
    ]
    assert out[0] == out[1] == expected
