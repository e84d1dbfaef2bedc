"""Helpers for the data tests: write tiny COCO datasets with hand-made annotations."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def write_image(path: Path, h: int, w: int, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((h, w, 3), value, np.uint8)
    cv2.imwrite(str(path), img)
    return path


def rect_poly(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def make_coco(root: Path, images, annotations, categories, name="ann.json", write_images=True):
    """Write ``root/images/<file_name>`` (gray PNGs) and ``root/<name>``; returns the JSON path."""
    if write_images:
        for img in images:
            write_image(root / "images" / img["file_name"], img["height"], img["width"])
    path = root / name
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return path


def gt_as_predictions_ap(ann_file) -> dict:
    """COCOeval AP (0..1) for bbox and segm when the ground truth itself is the prediction."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        out = {}
        for iou_type in ("bbox", "segm"):
            results = []
            for ann in gt.loadAnns(gt.getAnnIds()):
                res = {"image_id": ann["image_id"], "category_id": ann["category_id"], "score": 1.0}
                if iou_type == "bbox":
                    res["bbox"] = ann["bbox"]
                else:
                    rle = gt.annToRLE(ann)
                    counts = rle["counts"]
                    res["segmentation"] = dict(
                        rle, counts=counts.decode() if isinstance(counts, bytes) else counts
                    )
                results.append(res)
            ev = COCOeval(gt, gt.loadRes(results), iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            out[iou_type] = ev.stats[0]
    return out


def load_tool(name: str):
    """Import ``tools/<name>.py`` (tools/ is not a package) and return the module."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"detnorm_tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
