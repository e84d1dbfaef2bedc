"""Markdown tables of COCO metrics (``detnorm.evaluation.coco_eval.evaluate_coco``'s output), as the CLIs
print them: one row per iou type with the 12 stats, and per-category AP."""

from __future__ import annotations

from collections.abc import Mapping

from detnorm.evaluation.stats import STANDARD_MAX_DETS, max_dets_of, stat_names

__all__ = ["format_metrics_table", "format_per_category_table"]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _by_iou_type(metrics: Mapping) -> dict[str, Mapping]:
    """The per-iou-type entries of ``metrics``, skipping extras such as ``"step"``."""
    return {k: v for k, v in metrics.items() if isinstance(v, Mapping)}


def format_metrics_table(metrics: Mapping[str, Mapping]) -> str:
    """Markdown table: one row per iou type (bbox, segm), one column per stat, 1 decimal.

    Stats evaluated at another detections-per-image limit than COCO's 100 say so in the header:
    its first cell reads ``maxDets N`` and the third recall column is ``AR{N}``.
    """
    rows = _by_iou_type(metrics)
    max_dets = max((max_dets_of(m) for m in rows.values()), default=STANDARD_MAX_DETS)
    names = stat_names(max_dets)
    corner = "| |" if max_dets == STANDARD_MAX_DETS else f"| maxDets {max_dets} |"
    lines = [f"{corner} " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for iou_type, m in rows.items():
        lines.append(f"| {iou_type} | " + " | ".join(_fmt(m.get(s)) for s in names) + " |")
    return "\n".join(lines)


def format_per_category_table(metrics: Mapping[str, Mapping]) -> str:
    """Markdown table of per-category AP: one row per category, one column per iou type."""
    metrics = _by_iou_type(metrics)
    iou_types = list(metrics)
    names = list(dict.fromkeys(n for m in metrics.values() for n in m.get("per_category", {})))
    lines = [
        "| category | " + " | ".join(f"{t} AP" for t in iou_types) + " |",
        "|---|" + "---:|" * len(iou_types),
    ]
    for name in names:
        cells = [_fmt(metrics[t].get("per_category", {}).get(name)) for t in iou_types]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
