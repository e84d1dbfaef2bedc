"""Error analysis of COCO results against their ground truth: numbers only (no plotting).

* :func:`run_cocoeval` evaluates one iou type and keeps the ``COCOeval`` object, whose
  ``eval["precision"]`` (iou thresholds T x 101 recall points x categories K x areas x maxDets)
  gives :func:`pr_curves` and :func:`per_category_ap`.
* :func:`match_image` matches one image's detections to its ground truth at one IoU
  threshold, the way :func:`confusion_matrix` and :func:`image_scores` count errors.

Inputs are COCO dicts: ground-truth annotations with ``bbox`` ``[x, y, w, h]`` absolute pixels,
``segmentation`` (polygons or RLE) and ``iscrowd``; results with ``bbox`` or ``segmentation``
(RLE) and ``score``.
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pycocotools.mask as mask_util

from detnorm.evaluation.coco_eval import load_gt_dataset, resolve_backend

__all__ = [
    "ImageMatch",
    "confusion_matrix",
    "image_scores",
    "match_image",
    "per_category_ap",
    "pr_curves",
    "run_cocoeval",
    "segmentation_rle",
]

RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCOeval's recall thresholds


def run_cocoeval(gt, results: list[dict], iou_type: str, *, backend: str = "faster"):
    """Evaluate ``results`` (one iou type) and return the accumulated ``COCOeval`` object.

    ``gt``: path, dict or COCO object (ids renumbered as in ``detnorm.evaluation.coco_eval``). The last
    ``maxDets`` is raised from 100 to the largest number of detections on one image, so no
    detection is cut from the curves.
    """
    dataset = load_gt_dataset(gt, (iou_type,))
    dets = [{k: v for k, v in r.items() if not (iou_type == "segm" and k == "bbox")}
            for r in results]  # fmt: skip
    per_image = defaultdict(int)
    for r in dets:
        per_image[r["image_id"]] += 1
    max_dets = [1, 10, max(100, *per_image.values(), 0)]
    if resolve_backend(backend) == "faster":
        from faster_coco_eval import COCO, COCOeval_faster

        def quiet(*args, **kwargs):
            pass

        coco = COCO(dataset, print_function=quiet)
        ev = COCOeval_faster(coco, coco.loadRes(dets), iou_type, print_function=quiet)
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO()
            coco.dataset = dataset
            coco.createIndex()
            ev = COCOeval(coco, coco.loadRes(dets) if dets else COCO(), iou_type)
    ev.params.maxDets = max_dets
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev


def _iou_index(ev, iou: float) -> int:
    hits = np.flatnonzero(np.isclose(ev.params.iouThrs, iou))
    if not len(hits):
        raise ValueError(f"IoU {iou} is not one of COCOeval's thresholds {list(ev.params.iouThrs)}")
    return int(hits[0])


def _names(ev) -> list[str]:
    return [ev.cocoGt.cats[c]["name"] for c in ev.params.catIds]


def pr_curves(ev, ious=(0.5, 0.75)) -> dict[float, dict[str, np.ndarray]]:
    """``{iou: {category name: precision (101,), ..., "mean": (101,)}}`` at the recall points
    :data:`RECALL_POINTS`, all areas, the last maxDets. A category without ground truth is
    left out; ``"mean"`` averages the categories present, as COCO's AP does."""
    precision = np.asarray(ev.eval["precision"])
    out: dict[float, dict[str, np.ndarray]] = {}
    for iou in ious:
        p = precision[_iou_index(ev, iou), :, :, 0, -1]  # (101, K)
        curves = {n: p[:, k] for k, n in enumerate(_names(ev)) if (p[:, k] > -1).any()}
        if curves:
            curves["mean"] = np.mean(np.stack(list(curves.values())), axis=0)
        out[iou] = curves
    return out


def per_category_ap(ev) -> dict[str, float | None]:
    """AP x100 (IoU .50:.95, all areas, last maxDets) per category name; None without GT."""
    precision = np.asarray(ev.eval["precision"])[:, :, :, 0, -1]
    out = {}
    for k, name in enumerate(_names(ev)):
        p = precision[:, :, k]
        p = p[p > -1]
        out[name] = float(p.mean() * 100) if p.size else None
    return out


def segmentation_rle(obj: dict, height: int, width: int) -> dict:
    """The compressed RLE of an annotation's or result's ``segmentation`` (polygons or RLE)."""
    seg = obj["segmentation"]
    if isinstance(seg, list):  # polygons
        return mask_util.merge(mask_util.frPyObjects(seg, height, width))
    if isinstance(seg.get("counts"), list):  # uncompressed RLE
        return mask_util.frPyObjects(seg, height, width)
    return {"size": seg["size"], "counts": seg["counts"]}


def _ious(dets: list[dict], gts: list[dict], iou_type: str, crowd: bool, hw) -> np.ndarray:
    if not dets or not gts:
        return np.zeros((len(dets), len(gts)))
    if iou_type == "bbox":
        d, g = [r["bbox"] for r in dets], [a["bbox"] for a in gts]
    else:
        d, g = [segmentation_rle(r, *hw) for r in dets], [segmentation_rle(a, *hw) for a in gts]
    return np.asarray(mask_util.iou(d, g, [int(crowd)] * len(gts))).reshape(len(dets), len(gts))


@dataclass
class ImageMatch:
    """One image's detections matched to its ground truth (indices into the lists given).

    ``same``: (det, gt) pairs of one category; ``cross``: (det, gt) pairs of different
    categories among the rest; ``false_pos``: dets matching nothing; ``ignored``: dets inside
    a crowd region; ``missed``: gts matched by no det of any category.
    """

    same: list[tuple[int, int]] = field(default_factory=list)
    cross: list[tuple[int, int]] = field(default_factory=list)
    false_pos: list[int] = field(default_factory=list)
    ignored: list[int] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)

    @property
    def f1(self) -> float:
        """``2 TP / (2 TP + FP + FN)``: cross-category pairs count as a FP and a FN; 1.0 for an
        image with neither ground truth nor detections."""
        tp = len(self.same)
        fp, fn = len(self.false_pos) + len(self.cross), len(self.missed) + len(self.cross)
        return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def match_image(dets, gts, iou_type: str, *, height: int, width: int, iou: float = 0.5):
    """Match ``dets`` (result dicts, any order) to ``gts`` (annotations) of one image.

    Greedy by descending score: first each det takes the unmatched gt of its own category with
    the highest IoU >= ``iou`` (COCOeval's matching), then the remaining dets do the same over
    the remaining gts of any category. A det still unmatched is ignored when it overlaps a crowd
    region by >= ``iou`` (intersection over the det's area, as COCO scores crowd), else it is a
    false positive. Returns an :class:`ImageMatch`.
    """
    normal = [i for i, a in enumerate(gts) if not a.get("iscrowd", 0)]
    crowd = [gts[i] for i, a in enumerate(gts) if a.get("iscrowd", 0)]
    ious = _ious(dets, [gts[i] for i in normal], iou_type, False, (height, width))
    crowd_ious = _ious(dets, crowd, iou_type, True, (height, width))
    order = sorted(range(len(dets)), key=lambda d: -dets[d]["score"])
    taken = np.zeros(len(normal), bool)
    match = ImageMatch()
    rest = []
    for same_pass in (True, False):
        for d in order if same_pass else rest:
            ok = (ious[d] >= iou) & ~taken
            if same_pass:
                ok &= np.array([gts[i]["category_id"] == dets[d]["category_id"] for i in normal],
                               bool)  # fmt: skip
            if ok.any():
                j = int(np.argmax(np.where(ok, ious[d], -1.0)))
                taken[j] = True
                (match.same if same_pass else match.cross).append((d, normal[j]))
            elif same_pass:
                rest.append(d)
            elif len(crowd) and (crowd_ious[d] >= iou).any():
                match.ignored.append(d)
            else:
                match.false_pos.append(d)
    match.missed = [normal[j] for j in np.flatnonzero(~taken)]
    return match


def _by_image(gt: dict, results: list[dict], score_threshold: float):
    gts, dets = defaultdict(list), defaultdict(list)
    for a in gt["annotations"]:
        gts[a["image_id"]].append(a)
    for r in results:
        if r["score"] >= score_threshold:
            dets[r["image_id"]].append(r)
    return gts, dets


def confusion_matrix(gt: dict, results: list[dict], iou_type: str, *, iou: float = 0.5,
                     score_threshold: float = 0.5) -> tuple[np.ndarray, list[str]]:  # fmt: skip
    """``(M, names)``: M (K + 1, K + 1) int64, rows the ground-truth category, columns the
    predicted one, in ``gt["categories"]`` order, the last row and column "background".

    ``M[g, g]``: correct detections; ``M[g, p]``: a ``g`` object detected as ``p``;
    ``M[g, K]``: missed ``g`` objects; ``M[K, p]``: ``p`` detections of nothing. Only results
    with ``score >= score_threshold`` count; see :func:`match_image` for the matching.
    """
    index = {c["id"]: k for k, c in enumerate(gt["categories"])}
    k_bg = len(index)
    m = np.zeros((k_bg + 1, k_bg + 1), np.int64)
    gts, dets = _by_image(gt, results, score_threshold)
    for img in gt["images"]:
        g, d = gts[img["id"]], dets[img["id"]]
        res = match_image(d, g, iou_type, height=img["height"], width=img["width"], iou=iou)
        for di, gi in res.same + res.cross:
            m[index[g[gi]["category_id"]], index[d[di]["category_id"]]] += 1
        for gi in res.missed:
            m[index[g[gi]["category_id"]], k_bg] += 1
        for di in res.false_pos:
            m[k_bg, index[d[di]["category_id"]]] += 1
    return m, [c["name"] for c in gt["categories"]] + ["background"]


def image_scores(gt: dict, results: list[dict], iou_type: str, *, iou: float = 0.5,
                 score_threshold: float = 0.5) -> list[dict]:  # fmt: skip
    """One row per image, worst first: ``{"image_id", "file_name", "gt", "dets", "tp", "fp",
    "fn", "f1"}`` (crowd regions and the detections they cover not counted), sorted by F1
    ascending, then missed objects descending, then image id."""
    gts, dets = _by_image(gt, results, score_threshold)
    rows = []
    for img in gt["images"]:
        g, d = gts[img["id"]], dets[img["id"]]
        res = match_image(d, g, iou_type, height=img["height"], width=img["width"], iou=iou)
        rows.append({
            "image_id": img["id"], "file_name": img.get("file_name", ""),
            "gt": sum(not a.get("iscrowd", 0) for a in g), "dets": len(d) - len(res.ignored),
            "tp": len(res.same), "fp": len(res.false_pos) + len(res.cross),
            "fn": len(res.missed) + len(res.cross), "f1": res.f1,
        })  # fmt: skip
    rows.sort(key=lambda r: (r["f1"], -r["fn"], r["image_id"]))
    return rows
