"""Write the error analysis of :mod:`detnorm.analysis.error_analysis`: PNGs, CSVs and ``analysis.md``.

Every file goes through ``detnorm.io.atomic_write``. Files written into ``out``:

* ``pr_{bbox,segm}.png``: precision against recall at IoU 0.5 and 0.75, one line per category
  and the category mean; ``pr_curves.csv`` holds the same points
  (``iou_type, iou, category, recall, precision``);
* ``confusion_{bbox,segm}.png`` and ``.csv``: the confusion matrix at IoU 0.5;
* ``worst_NN.png``: ground truth (left) and predictions (right) of the worst images;
* ``analysis.md``: the tables, linking all of the above.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from detnorm.analysis.error_analysis import RECALL_POINTS
from detnorm.io import atomic_write

__all__ = ["write_confusion", "write_markdown", "write_pr", "write_worst_image"]


def _subplots(ncols: int, figsize):
    """A pyplot-free figure (no global backend state) and its (1, ncols) axes."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(1, ncols, squeeze=False)


def _save_fig(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return atomic_write(path, lambda f: f.write(buf.getvalue()), binary=True)


def _write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text))


def write_pr(curves_by_type: dict[str, dict], out: Path) -> dict[str, Path]:
    """``curves_by_type``: ``{iou_type: pr_curves(...)}``. Writes one PNG per iou type and
    ``pr_curves.csv``; returns ``{iou_type: png path, "csv": csv path}``."""
    written: dict[str, Path] = {}
    rows = [("iou_type", "iou", "category", "recall", "precision")]
    for iou_type, by_iou in curves_by_type.items():
        fig, axes = _subplots(len(by_iou), (5.2 * len(by_iou), 4.4))
        for ax, (iou, curves) in zip(axes[0], by_iou.items(), strict=True):
            for name, p in curves.items():
                rows += [(iou_type, iou, name, f"{r:.2f}", f"{v:.6f}")
                         for r, v in zip(RECALL_POINTS, p, strict=True)]  # fmt: skip
                style = {"color": "black", "lw": 2.5} if name == "mean" else {"lw": 1.2}
                ap = 100 * float(np.mean(p))
                ax.plot(RECALL_POINTS, p, label=f"{name} (AP{round(100 * iou)} {ap:.1f})", **style)
            ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
                   title=f"{iou_type}, IoU {iou}")  # fmt: skip
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower left")
        written[iou_type] = _save_fig(fig, out / f"pr_{iou_type}.png")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    written["csv"] = _write_text(out / "pr_curves.csv", buf.getvalue())
    return written


def write_confusion(matrix: np.ndarray, names: list[str], iou_type: str, out: Path):
    """``confusion_{iou_type}.csv`` (rows ground truth, columns prediction) and ``.png``
    (colour: the share of each ground-truth row; numbers: counts). Returns both paths."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["ground truth \\ predicted", *names])
    writer.writerows([name, *map(int, row)] for name, row in zip(names, matrix, strict=True))
    csv_path = _write_text(out / f"confusion_{iou_type}.csv", buf.getvalue())
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    size = 1.2 + 0.55 * len(names)
    fig, axes = _subplots(1, (size + 1.5, size))
    ax = axes[0, 0]
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(matrix):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black")  # fmt: skip
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="ground truth", title=f"{iou_type} confusion, IoU 0.5")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the ground-truth row")
    return csv_path, _save_fig(fig, out / f"confusion_{iou_type}.png")


def write_worst_image(left, right, title: str, path: Path) -> Path:
    """Two ``(3, H, W)`` uint8 tensors side by side: ground truth | predictions."""
    height, width = left.shape[1:]
    fig, axes = _subplots(2, (2 * max(3.0, width / 100), max(3.0, height / 100) + 0.5))
    for ax, img, name in zip(axes[0], (left, right), ("ground truth", "predictions"), strict=True):
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return _save_fig(fig, path)


def _table(header: list[str], rows: list[list]) -> str:
    """Markdown table; the first column and columns of text are left-aligned, numbers right."""

    def numeric(j: int) -> bool:
        return j > 0 and all(isinstance(r[j], (int, float)) or r[j] in ("-",) or
                             str(r[j]).replace(".", "", 1).isdigit() for r in rows)  # fmt: skip

    align = "|" + "".join("---:|" if numeric(j) else "---|" for j in range(len(header)))
    lines = ["| " + " | ".join(header) + " |", align]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def write_markdown(out: Path, *, source: str, ap: dict, pr: dict, confusion: dict,
                   worst: list[tuple[dict, Path]], score_threshold: float) -> Path:  # fmt: skip
    """``analysis.md``: per-category AP, the PR plots, the confusion tables, the worst images."""
    types = list(ap)
    names = list(dict.fromkeys(n for t in types for n in ap[t]))
    parts = [f"# Error analysis\n\nResults: `{source}`.\n", "## Per-category AP (IoU .50:.95)\n",
             _table(["category", *(f"{t} AP" for t in types)],
                    [[n, *(_fmt(ap[t].get(n)) for t in types)] for n in names]),  # fmt: skip
             "\n## Precision-recall at IoU 0.5 and 0.75\n",
             "\n".join(f"![{t} PR]({p.name})" for t, p in pr.items() if t != "csv"),
             f"\nPoints: [{pr['csv'].name}]({pr['csv'].name}).\n"]  # fmt: skip
    for iou_type, (matrix, labels, csv_path, png) in confusion.items():
        parts += [f"## Confusion matrix, {iou_type}, IoU 0.5, score >= {score_threshold}\n",
                  "Rows: ground truth; columns: prediction; `background`: missed objects "
                  "(column) and detections of nothing (row).\n",
                  _table(["gt \\ pred", *labels], [[n, *map(int, r)] for n, r in zip(labels, matrix, strict=True)]),
                  f"\n![{iou_type} confusion]({png.name}) ([csv]({csv_path.name}))\n"]  # fmt: skip
    if worst:
        parts += [f"## Worst {len(worst)} images (IoU 0.5, score >= {score_threshold})\n",
                  _table(["rank", "image", "file", "gt", "dets", "TP", "FP", "FN", "F1", "view"],
                         [[k, r["image_id"], r["file_name"], r["gt"], r["dets"], r["tp"],
                           r["fp"], r["fn"], f"{r['f1']:.2f}", f"[png]({p.name})" if p else "-"]
                          for k, (r, p) in enumerate(worst, start=1)])]  # fmt: skip
    else:
        parts.append("## Worst images\n\nEvery image is detected without an error.")
    return _write_text(out / "analysis.md", "\n".join(parts) + "\n")
