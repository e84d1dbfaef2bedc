"""COCO evaluation time: pycocotools against faster-coco-eval (``detnorm.evaluation.coco_eval`` backends).

    python benchmarks/bench_eval.py [--images 500] [--rounds 3]

A fixed, seeded synthetic set: ``--images`` images of 480x640 with 4-14 ground-truth objects
each (polygons, a few crowd regions, 80 categories as in COCO), and about 25 detections per image (jittered
copies of the objects plus false positives) with boxes and RLE masks. Each backend evaluates
bbox and segm through ``detnorm.evaluation.coco_eval.evaluate_coco`` (what training and tools/eval.py
run), interleaved over ``--rounds``; the stats of the two backends are asserted equal to 1e-6.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, machine, timed, write_result  # noqa: E402

from detnorm.evaluation.coco_eval import STAT_NAMES, evaluate_coco, load_gt_dataset  # noqa: E402

H, W = 480, 640
NUM_CATS = 80  # as COCO: pycocotools' Python loop runs per image x category x area range


def _polygon(rng, x, y, w, h, n=12) -> list[float]:
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = rng.uniform(0.7, 1.0, n)
    px = x + w / 2 + np.cos(t) * r * w / 2
    py = y + h / 2 + np.sin(t) * r * h / 2
    return np.stack([np.clip(px, 0, W - 1), np.clip(py, 0, H - 1)], 1).ravel().tolist()


def _rle(poly: list[float]) -> dict:
    rle = mask_util.merge(mask_util.frPyObjects([poly], H, W))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def synthetic_set(num_images: int, seed: int = 0) -> tuple[dict, list[dict]]:
    """(COCO ground truth dict, detections with both ``bbox`` and ``segmentation``)."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    cats = [{"id": i, "name": f"class{i}"} for i in range(1, NUM_CATS + 1)]
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": W, "height": H, "file_name": f"{image_id}.jpg"})
        for _ in range(int(rng.integers(4, 15))):
            w, h = np.exp(rng.uniform(np.log(8), np.log(300), 2))
            x, y = rng.uniform(0, W - w), rng.uniform(0, H - h)
            poly = _polygon(rng, x, y, w, h)
            cat = int(rng.integers(1, NUM_CATS + 1))
            area = float(mask_util.area(_rle_bytes(poly)))
            crowd = int(rng.random() < 0.03)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat,
                         "bbox": [x, y, w, h], "area": area, "iscrowd": crowd,
                         "segmentation": [poly]})  # fmt: skip
            for _ in range(int(rng.integers(1, 3))):  # near-duplicates of the object
                j = rng.normal(0, 0.08, 4) * [w, h, w, h]
                bx, by, bw, bh = x + j[0], y + j[1], max(2.0, w + j[2]), max(2.0, h + j[3])
                dets.append(_det(rng, image_id, cat if rng.random() < 0.8 else int(rng.integers(1, NUM_CATS + 1)),
                                 bx, by, bw, bh))  # fmt: skip
        for _ in range(int(rng.integers(5, 15))):  # false positives
            w, h = np.exp(rng.uniform(np.log(8), np.log(200), 2))
            dets.append(_det(rng, image_id, int(rng.integers(1, NUM_CATS + 1)),
                             rng.uniform(0, W - w), rng.uniform(0, H - h), w, h))  # fmt: skip
    return {"images": images, "annotations": anns, "categories": cats}, dets


def _rle_bytes(poly):
    return mask_util.merge(mask_util.frPyObjects([poly], H, W))


def _det(rng, image_id, cat, x, y, w, h) -> dict:
    x, y = float(np.clip(x, 0, W - 2)), float(np.clip(y, 0, H - 2))
    w, h = float(min(w, W - x)), float(min(h, H - y))
    return {"image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
            "score": float(rng.uniform(0.05, 1.0)),
            "segmentation": _rle(_polygon(rng, x, y, w, h))}  # fmt: skip


def max_stat_diff(a: dict, b: dict) -> float:
    diffs = [0.0]
    for t in a:
        for s in STAT_NAMES:
            x, y = a[t][s], b[t][s]
            assert (x is None) == (y is None), (t, s, x, y)
            if x is not None:
                diffs.append(abs(x - y) / 100)  # metrics are x100; compare raw COCO stats
        for name, x in a[t]["per_category"].items():
            y = b[t]["per_category"][name]
            if x is not None:
                diffs.append(abs(x - y) / 100)
    return max(diffs)


def run(num_images: int = 500, rounds: int = 3) -> dict:
    gt, dets = synthetic_set(num_images)
    gt = load_gt_dataset(gt, ("bbox", "segm"))
    out = {"machine": machine(), "images": num_images, "gt_annotations": len(gt["annotations"]),
           "detections": len(dets), "rounds": rounds, "iou_types": {}}  # fmt: skip
    for iou_type in ("bbox", "segm"):
        metrics: dict = {}

        def arm(backend, iou_type=iou_type, metrics=metrics):
            def go():
                metrics[backend] = evaluate_coco(gt, dets, iou_types=(iou_type,), backend=backend)

            return lambda: timed(go)

        res = interleaved({b: arm(b) for b in ("pycocotools", "faster")}, rounds=rounds, warmup=0)
        diff = max_stat_diff(metrics["pycocotools"], metrics["faster"])
        assert diff <= 1e-6, f"{iou_type}: backends differ by {diff}"
        py, fast = res["pycocotools"]["median_s"], res["faster"]["median_s"]
        out["iou_types"][iou_type] = {
            "pycocotools_s": py, "faster_s": fast, "speedup": py / fast,
            "max_abs_stat_diff": diff, "AP": metrics["faster"][iou_type]["AP"],
            "raw": res,
        }  # fmt: skip
        assert not math.isnan(py)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    result = run(args.images, args.rounds)
    for t, row in result["iou_types"].items():
        print(f"{t}: pycocotools {row['pycocotools_s']:.2f} s, faster {row['faster_s']:.2f} s, "
              f"{row['speedup']:.2f}x, max stat diff {row['max_abs_stat_diff']:.1e}")  # fmt: skip
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
