"""COCO evaluation: COCO results + ground truth -> COCOeval -> metrics (x100).

:func:`evaluate_coco` scores results (see :mod:`detnorm.evaluation.results` for how model outputs
become them) on one of two backends, pycocotools or faster-coco-eval (same numbers).

Two fixes over running pycocotools by hand, neither of which changes its numbers otherwise:

* pycocotools records a detection matched to ground-truth annotation id 0 as unmatched (a
  false positive). :func:`evaluate_coco` evaluates a copy of the ground truth whose annotation
  ids are renumbered 1..N in their original order (:func:`load_gt_dataset`); the caller's file
  or COCO object is untouched.
* ``COCO.loadRes`` raises on an empty list and writes into the result dicts it is given;
  here an empty list scores 0 and the caller's results are never modified.

Segmentation results are evaluated without their ``"bbox"`` key (if any), so small/medium/large
use the mask area, as in the COCO definition; otherwise pycocotools would use the box area.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import os
import sys
from collections.abc import Iterable
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detnorm.evaluation.results import IOU_TYPES, check_iou_types, check_results, load_results
from detnorm.evaluation.stats import STANDARD_MAX_DETS, max_dets_list, stat_names, summary_stats
from detnorm.io import read_json

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "STAT_NAMES",
    "evaluate_coco",
    "load_gt_dataset",
    "resolve_backend",
]

# fmt: off
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# fmt: on
BACKENDS = ("pycocotools", "faster")
DEFAULT_BACKEND = "faster"  # 3-8x faster than pycocotools here, same stats (BENCHMARKS.md)


class _GTDataset(dict):
    """A ground-truth dataset already copied and renumbered by :func:`load_gt_dataset`."""


def load_gt_dataset(gt: Any, iou_types: Iterable[str] = ("bbox",)) -> dict:
    """Return a private, evaluation-ready copy of a COCO ground-truth dataset.

    ``gt``: json path, COCO dataset dict, or a COCO object (pycocotools or faster-coco-eval).
    Annotation ids are renumbered 1..N in order (see the module docstring). Raises
    ``ValueError`` naming the problem if the dataset can't be evaluated for ``iou_types``.
    Passing the returned dict to :func:`evaluate_coco` reuses it without another copy.
    """
    owned = isinstance(gt, (str, os.PathLike))
    data = read_json(gt, "ground truth") if isinstance(gt, (str, os.PathLike)) else gt
    data = getattr(data, "dataset", data)
    if not isinstance(data, dict):
        raise ValueError(f"ground truth must be a COCO dict, got {type(data).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"ground truth has no {', '.join(missing)} (COCO instances format)")
    required = ["image_id", "category_id", "bbox", "area", "iscrowd"]
    required += ["segmentation"] if "segm" in check_iou_types(iou_types) else []
    for ann in data["annotations"]:
        lacking = [k for k in required if k not in ann]
        if lacking:
            raise ValueError(
                f"ground-truth annotation {ann.get('id', '?')} lacks {', '.join(lacking)}"
            )
    if isinstance(data, _GTDataset):
        return data
    if not owned:  # COCOeval writes into annotations; keep the caller's data pristine
        data = {**data, "annotations": copy.deepcopy(data["annotations"])}
        data["images"] = [dict(img) for img in data["images"]]
        data["categories"] = copy.deepcopy(data["categories"])
    for new_id, ann in enumerate(data["annotations"], start=1):
        ann["id"] = new_id
    return _GTDataset(data)


def evaluate_coco(
    gt: Any,
    results: Any,
    *,
    iou_types: Iterable[str] = IOU_TYPES,
    backend: str = DEFAULT_BACKEND,
    max_dets: int = STANDARD_MAX_DETS,
) -> dict[str, dict]:
    """Run COCOeval and return ``{iou_type: {stat: value, ..., "per_category": {name: AP}}}``.

    ``gt``: COCO object, dataset dict or json path. ``results``: ``{iou_type: list | path}``,
    or one list / json path used for every iou type. Stats are the 12 of ``STAT_NAMES`` x100;
    ``None`` where COCO leaves them undefined (pycocotools' -1, e.g. APs with no small GT).
    Per-category AP is at IoU .50:.95, all areas, ``max_dets`` detections, ``None`` if undefined.
    ``backend``: ``"faster"`` (faster-coco-eval, the default; same numbers) or
    ``"pycocotools"``; see :func:`resolve_backend` for the fallback.
    ``max_dets``: detections kept per image and category, COCOeval's ``maxDets = [1, 10,
    max_dets]`` (>= 10). Every stat except AR1/AR10 is at that limit and the third recall is named
    ``AR{max_dets}`` (``detnorm.evaluation.stats.stat_names``).
    """
    iou_types = check_iou_types(iou_types)
    backend = resolve_backend(backend)
    dataset = load_gt_dataset(gt, iou_types)
    by_type = load_results(results, iou_types)
    for iou_type, dets in by_type.items():
        check_results(dataset, dets, iou_type)
    limits = max_dets_list(max_dets)
    run = _run_pycocotools if backend == "pycocotools" else _run_faster
    return {t: _metrics(run(dataset, _copy_results(by_type[t], t), t, limits)) for t in iou_types}


_fallback_noticed = False


def resolve_backend(backend: str) -> str:
    """``backend`` if it can run. ``"faster"`` without faster-coco-eval installed falls back to
    ``"pycocotools"`` (identical stats, slower) with a one-line notice on stderr, once."""
    global _fallback_noticed
    if backend not in BACKENDS:
        raise ValueError(f"unknown evaluation backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend == "faster" and importlib.util.find_spec("faster_coco_eval") is None:
        if not _fallback_noticed:
            print("detnorm: faster-coco-eval is not installed; evaluating with pycocotools "
                  "(same numbers, slower)", file=sys.stderr)  # fmt: skip
            _fallback_noticed = True
        return "pycocotools"
    return backend


def _copy_results(results: list[dict], iou_type: str) -> list[dict]:
    """Fresh dicts for loadRes to write into; segm drops "bbox" so the mask area is used."""
    if iou_type == "segm":
        return [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    return [dict(r) for r in results]


def _run_pycocotools(
    dataset: dict, dets: list[dict], iou_type: str, max_dets: list[int] | None = None
) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        if dets:
            dt = gt.loadRes(dets)
        else:  # loadRes can't take an empty list
            dt = COCO()
            dt.dataset = {"images": list(dataset["images"]), "annotations": []}
            dt.dataset["categories"] = copy.deepcopy(dataset["categories"])
            dt.createIndex()
        ev = COCOeval(gt, dt, iou_type)
        ev.params.maxDets = list(max_dets or ev.params.maxDets)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _run_faster(dataset: dict, dets: list[dict], iou_type: str, max_dets: list[int] | None = None):
    from faster_coco_eval import COCO as FasterCOCO
    from faster_coco_eval import COCOeval_faster

    def quiet(*args, **kwargs):
        pass

    gt = FasterCOCO(dataset, print_function=quiet)
    ev = COCOeval_faster(gt, gt.loadRes(dets), iou_type, print_function=quiet)
    ev.params.maxDets = list(max_dets or ev.params.maxDets)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


def _percent(x: float) -> float | None:
    return None if not np.isfinite(x) or x < 0 else float(x) * 100.0


def _metrics(ev) -> dict:
    """The 12 stats and per-category AP (x100) from an evaluated, summarized COCOeval, at its
    ``params.maxDets[-1]`` (see ``detnorm.evaluation.stats``)."""
    max_dets = int(ev.params.maxDets[-1])
    names = stat_names(max_dets)
    metrics: dict[str, Any] = {
        name: _percent(s) for name, s in zip(names, summary_stats(ev), strict=True)
    }
    # precision: (iou thresholds, recall thresholds, categories, area ranges, max dets);
    # area index 0 is "all", max-dets index -1 is the limit, as in COCOeval.summarize.
    precision = ev.eval["precision"][:, :, :, 0, -1]
    per_category: dict[str, float | None] = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k]
        p = p[p > -1]
        name = ev.cocoGt.cats[cat_id]["name"]
        name = f"{name} (id {cat_id})" if name in per_category else name
        per_category[name] = _percent(p.mean()) if p.size else None
    metrics["per_category"] = per_category
    return metrics
