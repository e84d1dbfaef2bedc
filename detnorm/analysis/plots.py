"""Figures across training runs: AP against step and loss curves, as PNG (matplotlib, Agg).

Runs come from :func:`detnorm.analysis.compare.load_runs`; each line is one run, labelled with its name,
norms and initialization.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from detnorm.analysis.compare import IOU_TYPES, LOSS_TERMS, Run, init_summary, norm_summary


def _label(run: Run) -> str:
    return f"{run.name} ({norm_summary(run.config)}, {init_summary(run.config)})"


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Bias-corrected exponential moving average with span ``window`` (1 means no smoothing)."""
    if window <= 1 or len(values) == 0:
        return np.asarray(values, dtype=float)
    alpha = 2.0 / (window + 1.0)
    out, acc, weight = np.empty(len(values)), 0.0, 0.0
    for i, v in enumerate(values):
        acc = (1 - alpha) * acc + alpha * v
        weight = (1 - alpha) * weight + alpha
        out[i] = acc / weight
    return out


def _step_label(value, _pos=None) -> str:
    """Tick label for a step count: 250, 1.5k, 90k."""
    if abs(value) < 1000:
        return f"{value:g}"
    return f"{value / 1000:g}k"


def _finish(fig: Figure, axes, labels: Sequence[str], colors, path: Path, markers: bool) -> Path:
    """Put one shared legend under the axes, format step axes, save as PNG."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(nbins="auto", integer=True, min_n_ticks=3))
        ax.xaxis.set_major_formatter(FuncFormatter(_step_label))
    marker = "o" if markers else None
    handles = [Line2D([], [], color=c, lw=2, marker=marker, ms=4) for c in colors]
    ncol = len(labels) if len(labels) <= 3 else (2 if len(labels) == 4 else 3)
    rows = math.ceil(len(labels) / ncol)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False, fontsize=10)
    legend_inches = 0.28 * rows + 0.15
    fig.tight_layout(rect=(0, min(0.4, legend_inches / fig.get_figheight()), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_ap(runs: Sequence[Run], path: str | os.PathLike, stat: str = "AP") -> Path:
    """Validation ``stat`` (x100) against training step, box and mask side by side.

    A run whose CSV has no validation rows but whose metrics.json has the stat is one point at
    its final step; a run with neither is listed in the legend as having no validation yet.
    """
    fig = Figure(figsize=(12, 5.5))
    axes = fig.subplots(1, 2, sharex=True)
    colors = _colors(len(runs))
    has_data = [False] * len(runs)
    for ax, iou_type in zip(axes, IOU_TYPES, strict=True):
        kind = "box" if iou_type == "bbox" else "mask"
        for i, (run, color) in enumerate(zip(runs, colors, strict=True)):
            steps, values = run.history.get(f"val/{iou_type}_{stat}", ((), ()))
            if len(steps) == 0 and run.metric(f"{iou_type}/{stat}") is not None:
                steps = [(run.metrics or {}).get("step", 0)]  # only the final evaluation
                values = [run.metric(f"{iou_type}/{stat}")]
            has_data[i] |= len(steps) > 0
            ax.plot(steps, values, color=color, lw=2, marker="o", ms=4)
        ax.set_title(f"{kind} {stat} on the validation set")
        ax.set_ylabel(f"{kind} {stat} (COCO, x100)")
    fig.suptitle(f"Validation {stat} vs training step", fontsize=14)
    labels = [
        _label(r) + ("" if ok else ": no validation yet")
        for r, ok in zip(runs, has_data, strict=True)
    ]
    return _finish(fig, axes, labels, colors, Path(path), markers=True)


def plot_losses(runs: Sequence[Run], path: str | os.PathLike) -> Path:
    """Total training loss (smoothed, raw faint) large on top, each loss term below it.

    Smoothing is a debiased EMA whose span grows with the number of logged points (1 to 100).
    The total's y axis stops a little above the highest smoothed value so that a few raw
    spikes in the first steps do not squash the rest of the curve.
    """
    fig = Figure(figsize=(13, 8.5))
    grid = fig.add_gridspec(2, len(LOSS_TERMS), height_ratios=(1.6, 1))
    top = fig.add_subplot(grid[0, :])
    terms = [fig.add_subplot(grid[1, i], sharex=top) for i in range(len(LOSS_TERMS))]
    colors = _colors(len(runs))
    top_max = 0.0
    for run, color in zip(runs, colors, strict=True):
        steps, values = run.history.get("train/loss", ((), ()))
        window = max(1, min(100, len(values) // 25))
        smoothed = smooth(np.asarray(values), window)
        if window > 1:
            top.plot(steps, values, color=color, lw=0.8, alpha=0.25)
        marker = "o" if len(values) < 20 else None  # a short run's few points stay visible
        top.plot(steps, smoothed, color=color, lw=2, marker=marker, ms=4)
        top_max = max(top_max, float(smoothed.max(initial=0.0)))
        for ax, term in zip(terms, LOSS_TERMS, strict=True):
            steps, values = run.history.get(f"train/{term}", ((), ()))
            ax.plot(
                steps, smooth(np.asarray(values), window), color=color, lw=1.5, marker=marker, ms=3
            )
    top.set_title("total training loss (smoothed; raw values faint)")
    top.set_ylabel("loss")
    top.set_ylim(0, top_max * 1.1 if top_max > 0 else 1.0)
    for ax, term in zip(terms, LOSS_TERMS, strict=True):
        ax.set_title(term.removeprefix("loss_"), fontsize=10)
        ax.tick_params(labelsize=8)
        ax.set_ylim(bottom=0)
    terms[0].set_ylabel("loss term (smoothed)")
    fig.suptitle("Training losses", fontsize=14)
    labels = [_label(r) for r in runs]
    return _finish(fig, [top, *terms], labels, colors, Path(path), markers=False)
