"""COCO's 12 summary stats at any detections-per-image limit (the last of COCOeval's ``maxDets``).

COCOeval keeps at most ``maxDets[-1]`` detections per image and category (100 by default), so on
an image with more objects than that even perfect predictions miss some, and AP stays below 100.
:func:`summary_stats` computes the stats of ``COCOeval.summarize`` from an accumulated evaluation
at the evaluation's own ``params.maxDets = [1, 10, N]``: pycocotools' ``summarize`` computes its
first stat at a hard-coded 100 and returns -1 when 100 is not among ``maxDets``. At the default
``[1, 10, 100]`` the numbers are those of ``summarize`` (the tests check it on both backends).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "STANDARD_MAX_DETS",
    "eval_max_dets",
    "max_dets_list",
    "max_dets_of",
    "stat_names",
    "summary_stats",
]

STANDARD_MAX_DETS = 100
_BASE_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", None, "ARs", "ARm", "ARl")


def stat_names(max_dets: int = STANDARD_MAX_DETS) -> tuple[str, ...]:
    """The 12 stat names; the third recall is ``AR{max_dets}`` (``AR100`` by default)."""
    return tuple(n or f"AR{int(max_dets)}" for n in _BASE_NAMES)


def max_dets_list(max_dets: int) -> list[int]:
    """COCOeval's ``params.maxDets`` for a limit of ``max_dets`` (>= 10): ``[1, 10, max_dets]``."""
    if isinstance(max_dets, bool) or not isinstance(max_dets, int) or max_dets < 10:
        raise ValueError(f"max_dets must be an integer >= 10, got {max_dets!r}")
    return [1, 10, max_dets]


def eval_max_dets(model_limit: int) -> int:
    """The ``maxDets`` to evaluate a model that returns at most ``model_limit`` detections per
    image: its own limit, and never below COCO's 100. Below 100 both give the same numbers
    (COCOeval never has more than the limit to cut), so the stats keep their standard names."""
    return max(STANDARD_MAX_DETS, int(model_limit))


def _mean(values: np.ndarray) -> float:
    values = values[values > -1]
    return float(np.mean(values)) if values.size else -1.0


def summary_stats(ev) -> list[float]:
    """The 12 stats of ``COCOeval.summarize`` (fractions, -1 where undefined) from an evaluated
    and accumulated ``ev`` (pycocotools or faster-coco-eval), at ``ev.params.maxDets``.

    ``ev.eval["precision"]`` is ``(T iou thresholds, R recall points, K categories, A areas,
    M maxDets)``, ``ev.eval["recall"]`` is ``(T, K, A, M)``; areas are all/small/medium/large.
    """
    p = ev.params
    precision, recall = np.asarray(ev.eval["precision"]), np.asarray(ev.eval["recall"])
    area = {label: i for i, label in enumerate(p.areaRngLbl)}
    last = len(p.maxDets) - 1

    def ap(iou=None, rng="all"):
        s = precision if iou is None else precision[np.where(iou == np.asarray(p.iouThrs))[0]]
        return _mean(s[:, :, :, area[rng], last])

    def ar(m=last, rng="all"):
        return _mean(recall[:, :, area[rng], m])

    return [
        ap(), ap(0.5), ap(0.75), ap(rng="small"), ap(rng="medium"), ap(rng="large"),
        ar(0), ar(1), ar(), ar(rng="small"), ar(rng="medium"), ar(rng="large"),
    ]  # fmt: skip


def max_dets_of(metrics) -> int:
    """The limit an ``evaluate_coco`` result (one iou type's dict) was computed at, read from its
    ``AR{N}`` stat name (100 when none is found)."""
    for key in metrics:
        if key.startswith("AR") and key[2:].isdigit() and key not in ("AR1", "AR10"):
            return int(key[2:])
    return STANDARD_MAX_DETS
