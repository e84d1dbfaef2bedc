"""AP against training steps for the study's curve seeds (``study.yaml``: ``curve``).

The runs of those seeds evaluate several times during training. Their ``metrics.csv`` holds
one validation row per evaluation, and this module reads those rows back. It plots one line per
cell of a family, and it measures how much each run still gained over the last stretch of its
schedule. That gain is the report's evidence of a plateau.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure

from detnorm.analysis.compare import read_metrics_csv
from detnorm.io import atomic_write
from reproduction.runner import Study, finished, run_dir

__all__ = ["family_curves", "last_gain", "plateau_text", "plot_curves", "read_curve"]

TAGS = {"bbox": "val/bbox_AP", "segm": "val/segm_AP"}


def read_curve(directory: Path) -> list[dict]:
    """``[{"step", "bbox", "segm"}, ...]`` for every evaluation in ``directory/metrics.csv``
    (empty when there is none). Lightning logs the evaluation after optimizer step N at N - 1."""
    path = Path(directory) / "metrics.csv"
    if not path.is_file():
        return []
    series = read_metrics_csv(path)
    if TAGS["bbox"] not in series:
        return []
    steps, box = series[TAGS["bbox"]]
    mask = dict(zip(*series.get(TAGS["segm"], ([], [])), strict=True))
    return [{"step": int(s) + 1, "bbox": float(b), "segm": float(mask.get(s, float("nan")))}
            for s, b in zip(steps, box, strict=True)]  # fmt: skip


def family_curves(study: Study, family, root: Path) -> dict[str, list[dict]]:
    """``{cell id: curve}`` for the first curve seed, for the cells whose run has two or more
    evaluations, once it has finished (``same_as`` cells show their target's run)."""
    seeds = study.curve.get("seeds") or []
    if not seeds:
        return {}
    out = {}
    for cell in family.cells.values():
        own = study.resolve(cell)
        if finished(study, own, seeds[0], root) is None:
            continue
        curve = read_curve(run_dir(root, own, seeds[0]))
        if len(curve) >= 2:
            out[cell.id] = curve
    return out


def partial(curve: list[dict]) -> bool:
    """True for a curve without mask AP (restored from a record that kept only box AP)."""
    return any(math.isnan(p["segm"]) for p in curve)


def _name(cell) -> str:
    return cell.label if cell.x is None else f"{cell.label} at {cell.x:g}"


def _before_last(curve: list[dict]) -> dict:
    """The last evaluation at or before 90 % of the run (not one a few steps before its end)."""
    cut = 0.9 * curve[-1]["step"]
    return [p for p in curve[:-1] if p["step"] <= cut][-1] if curve[0]["step"] <= cut else curve[0]


def last_gain(curve: list[dict], iou: str = "bbox") -> float:
    """AP at the last evaluation minus AP at the evaluation before it (:func:`_before_last`)."""
    return curve[-1][iou] - _before_last(curve)[iou]


def plateau_text(study: Study, family, curves: dict[str, list[dict]]) -> str:
    """A sentence with each curve's gain over the last stretch of its run."""
    if not curves:
        return ""
    seed = study.curve["seeds"][0]
    parts = []
    for cell_id, curve in curves.items():
        steps = f"{_before_last(curve)['step']}→{curve[-1]['step']}"
        parts.append(f"{_name(study.cell(cell_id))} {last_gain(curve):+.1f} ({steps})")
    biggest = max(abs(last_gain(c)) for c in curves.values())
    return (f"Plateau (seed {seed}, box AP gained over the last stretch of each run, between its "
            f"last two evaluations): "
            f"{', '.join(parts)}; largest change {biggest:.1f} AP.")  # fmt: skip


def plot_curves(study: Study, family, curves: dict[str, list[dict]], path: Path) -> Path | None:
    """Box and mask AP against steps, one line per cell; ``None`` when there are no curves. The
    cells of a probe (``Family.probe``: ``*_12x`` under an ``analysis.long``) get a second row,
    each line dashed in the colour of its sweep's cell at the same x."""
    if not curves:
        return None
    probe = {f"{family.name}/{n}" for n in family.probe}
    rows = [[c for c in curves if (c in probe) == long] for long in (False, True)]
    rows = [(ids, long) for ids, long in zip(rows, (False, True), strict=True) if ids]

    def key(cell_id):  # "BN 12x" at 2 takes the colour of "BN" at 2
        cell = study.cell(cell_id)
        return (cell.label.rsplit(" ", 1)[0] if cell_id in probe else cell.label), cell.x

    keys = list(dict.fromkeys(key(c) for c in curves))
    fig = Figure(figsize=(10, 4 * len(rows)))
    for r, (ids, long) in enumerate(rows):
        for k, (iou, title) in enumerate((("bbox", "box AP"), ("segm", "mask AP"))):
            ax = fig.add_subplot(len(rows), 2, 2 * r + k + 1)
            for cell_id in ids:
                curve = curves[cell_id]
                if all(math.isnan(p[iou]) for p in curve):
                    continue  # a restored curve without mask AP
                ax.plot([p["step"] for p in curve], [p[iou] for p in curve], marker="o",
                        color=f"C{keys.index(key(cell_id)) % 10}", ls="--" if long else "-",
                        label=_name(study.cell(cell_id)))  # fmt: skip
            ax.set_xlabel("training step")
            ax.set_ylabel(f"{title} (seed {study.curve['seeds'][0]})")
            ax.set_title(f"{title} against steps" + (" (12x probe)" if long else ""))
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, "no curve: the restored runs kept box AP only",
                        ha="center", va="center", transform=ax.transAxes)  # fmt: skip
    restored = "\n(two-point lines: restored runs that kept only their last two box-AP values)"
    fig.suptitle(f"{family.title}: AP during training"
                 + (restored if any(partial(c) for c in curves.values()) else ""), fontsize=9)  # fmt: skip
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)
    return path
