"""Markdown tables of COCO metrics (``detnorm.evaluation.evaluate_coco``'s output), as the CLIs
print them: one row per iou type with the 12 stats, and per-category AP."""

from __future__ import annotations

from collections.abc import Mapping

from detnorm.evaluation import STAT_NAMES

__all__ = ["format_metrics_table", "format_per_category_table"]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _by_iou_type(metrics: Mapping) -> dict[str, Mapping]:
    """The per-iou-type entries of ``metrics``, skipping extras such as ``"step"``."""
    return {k: v for k, v in metrics.items() if isinstance(v, Mapping)}


def format_metrics_table(metrics: Mapping[str, Mapping]) -> str:
    """Markdown table: one row per iou type (bbox, segm), one column per stat, 1 decimal."""
    lines = ["| | " + " | ".join(STAT_NAMES) + " |", "|---|" + "---:|" * len(STAT_NAMES)]
    for iou_type, m in _by_iou_type(metrics).items():
        lines.append(f"| {iou_type} | " + " | ".join(_fmt(m.get(s)) for s in STAT_NAMES) + " |")
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
