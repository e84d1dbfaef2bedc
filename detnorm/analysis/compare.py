"""Compare training runs: read run directories, build a markdown table, plot AP and loss curves.

A run directory is what ``tools/train.py`` writes (see the README): ``config.yaml`` (required),
``metrics.json`` (final COCO metrics, x100, present once the run has been evaluated) and
``metrics.csv`` (Lightning ``CSVLogger``: one row per logging call, a ``step`` column and one
column per logged key such as ``train/loss`` or ``val/segm_AP``; cells may be empty).

Plots are drawn with matplotlib's object API on the Agg canvas, so no display and no global
pyplot state is involved.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from detnorm.evaluation.coco_eval import STAT_NAMES
from detnorm.io import read_json
from detnorm.solver.schedule import resolve_schedule

COMPONENTS = ("backbone", "fpn", "box_head", "mask_head")
IOU_TYPES = ("bbox", "segm")
LOSS_TERMS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
NORM_LEGEND = "norm: one name when all components agree, else backbone/fpn/box_head/mask_head"
MISSING = "-"


@dataclass
class Run:
    """One run directory: its resolved config, final metrics and logged history.

    ``metrics`` is ``metrics.json`` (``{"bbox": {"AP": ...}, "segm": {...}, "step": ...}``) or,
    when that file does not exist yet, the last validation values found in ``metrics.csv``
    (``from_csv`` is then True), or None when neither has any. ``history`` maps a CSV column
    to ``(steps, values)``, two float arrays sorted by step with empty cells dropped.
    """

    path: Path
    name: str
    config: dict
    metrics: dict | None
    history: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    from_csv: bool = False

    def metric(self, key: str) -> float | None:
        """Value of ``"iou_type/stat"`` (e.g. ``"segm/AP"``) or None when not available."""
        iou_type, stat = key.split("/", 1)
        value = ((self.metrics or {}).get(iou_type) or {}).get(stat)
        return None if value is None or not math.isfinite(float(value)) else float(value)


def parse_metric(key: str) -> str:
    """Validate a metric key ``"<bbox|segm>/<stat>"``; ``ValueError`` says what is allowed."""
    iou_type, _, stat = key.partition("/")
    if iou_type not in IOU_TYPES or stat not in STAT_NAMES:
        raise ValueError(
            f"--metric: {key!r} is not '<iou_type>/<stat>' with iou_type in {', '.join(IOU_TYPES)}"
            f" and stat in {', '.join(STAT_NAMES)} (e.g. 'segm/AP')"
        )
    return key


def read_metrics_csv(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read a Lightning CSVLogger file into ``{column: (steps, values)}``.

    Empty and non-numeric cells are skipped. When a step appears twice in a column (a resumed
    run re-logging steps after its last checkpoint) the later row wins. Rows without a ``step``
    column value use their row index.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    series: dict[str, dict[float, float]] = {}
    for index, row in enumerate(rows):
        step = _to_float(row.get("step"))
        step = float(index) if step is None else step
        for column, cell in row.items():
            value = _to_float(cell)
            if column in (None, "step") or value is None:
                continue
            series.setdefault(column, {})[step] = value
    out = {}
    for column, points in series.items():
        steps = np.array(sorted(points), dtype=float)
        out[column] = (steps, np.array([points[s] for s in steps], dtype=float))
    return out


def _to_float(cell) -> float | None:
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def load_run(path: str | os.PathLike, name: str | None = None) -> Run:
    """Load one run directory; ``ValueError`` naming the directory if it is not a run."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"run directory not found: {path}")
    config_file = path / "config.yaml"
    if not config_file.is_file():
        raise ValueError(f"not a run directory (no config.yaml): {path}")
    try:
        config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"not valid YAML: {config_file} ({e})") from None
    if not isinstance(config, dict):
        raise ValueError(f"expected a mapping of config keys in {config_file}")
    history = read_metrics_csv(path / "metrics.csv") if (path / "metrics.csv").is_file() else {}
    metrics, from_csv = None, False
    if (path / "metrics.json").is_file():
        metrics = read_json(path / "metrics.json", what=f"metrics of run {path}")
        if not isinstance(metrics, dict):
            raise ValueError(f"expected a JSON object in {path / 'metrics.json'}")
    else:
        metrics = _last_validation(history)
        from_csv = metrics is not None
    return Run(path, name or path.name, config, metrics, history, from_csv)


def _last_validation(history) -> dict | None:
    """Metrics dict from the last logged ``val/<iou>_<stat>`` values, with their ``step``."""
    metrics: dict = {}
    last_step = None
    for iou_type in IOU_TYPES:
        for stat in STAT_NAMES:
            column = history.get(f"val/{iou_type}_{stat}")
            if column is not None and len(column[0]):
                metrics.setdefault(iou_type, {})[stat] = float(column[1][-1])
                last_step = max(last_step or 0.0, float(column[0][-1]))
    if not metrics:
        return None
    metrics["step"] = int(last_step)
    return metrics


def load_runs(paths: Sequence[str | os.PathLike]) -> list[Run]:
    """Load several runs, naming each by the shortest path suffix that tells them apart."""
    if not paths:
        raise ValueError("no run directories given")
    resolved = [Path(p).resolve() for p in paths]
    depth = 1
    while depth < 8:
        names = ["/".join(p.parts[-depth:]) for p in resolved]
        if len(set(names)) == len(names):
            break
        depth += 1
    return [load_run(p, name) for p, name in zip(paths, names, strict=True)]


def norm_summary(config: dict) -> str:
    """``"gn"`` when every component uses the same norm, else ``"frozen_bn/gn/gn/gn"``."""
    norms = [config.get(f"{c}_norm") or config.get("norm") or "?" for c in COMPONENTS]
    return norms[0] if len(set(norms)) == 1 else "/".join(norms)


def init_summary(config: dict) -> str:
    """``scratch`` for ``pretrained: none``, ``imagenet``, the weights file name, or ``-``."""
    pretrained = config.get("pretrained")
    if pretrained is None:
        return MISSING
    if pretrained in ("none", False, ""):
        return "scratch"
    if pretrained == "imagenet":
        return "imagenet"
    return Path(str(pretrained)).name


def total_batch(config: dict) -> int | None:
    """``total_batch_size`` or batch_size x devices x num_nodes (None when unknown)."""
    if config.get("total_batch_size"):
        return int(config["total_batch_size"])
    if not config.get("batch_size"):
        return None
    devices = config.get("devices")
    devices = devices if isinstance(devices, int) and devices > 0 else 1
    return int(config["batch_size"]) * devices * int(config.get("num_nodes") or 1)


def total_steps(config: dict) -> int | None:
    """``max_steps`` when set, else the schedule's length scaled to the total batch size."""
    if config.get("max_steps"):
        return int(config["max_steps"])
    batch = total_batch(config)
    if not config.get("schedule") or batch is None:
        return None
    try:
        return resolve_schedule(str(config["schedule"]), batch).max_steps
    except ValueError:
        return None


def build_table(runs: Sequence[Run], metric: str = "segm/AP") -> str:
    """Markdown table of the runs, best ``metric`` first (runs without it last, in given order).

    AP values are COCO stats x100 with one decimal; ``-`` marks a value not available.
    """
    parse_metric(metric)
    columns = [f"{t}/{s}" for t in IOU_TYPES for s in ("AP", "AP50", "AP75")]
    if metric not in columns:
        columns.append(metric)
    titles = {"bbox": "box", "segm": "mask"}
    header = ["run", "norm", "init", "schedule", "steps", "batch", "eval step"]
    header += [f"{titles[c.split('/')[0]]} {c.split('/')[1]}" for c in columns]

    def rank(run: Run) -> float:
        value = run.metric(metric)
        return math.inf if value is None else -value

    ranked = sorted(runs, key=rank)  # stable: ties keep the given order
    lines = [_row(header), _row(["---"] * 4 + ["---:"] * (len(header) - 4))]
    for run in ranked:
        cfg = run.config
        step = (run.metrics or {}).get("step")
        step_text = MISSING if step is None else f"{int(step)}{'*' if run.from_csv else ''}"
        cells = [run.name, norm_summary(cfg), init_summary(cfg), cfg.get("schedule") or MISSING]
        cells += [_text(total_steps(cfg)), _text(total_batch(cfg)), step_text]
        cells += [_number(run.metric(c)) for c in columns]
        lines.append(_row(cells))
    notes = [NORM_LEGEND, f"sorted by {metric}; AP values are COCO x100"]
    if any(r.from_csv for r in runs):
        notes.append("\\* last validation in metrics.csv (the run has no metrics.json yet)")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def _row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _text(value) -> str:
    return MISSING if value in (None, "") else str(value)


def _number(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f}"


# --------------------------------------------------------------------------------------- plots
