"""The classification batch sweep's figure: error against images per step beside the paper's,
and the seed-0 validation curves (:mod:`reproduction.classification` runs and tabulates)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from detnorm.io import atomic_write
from reproduction.classification import Plan

__all__ = ["plot"]


def plot(plan: Plan, rows: list[dict], results: dict[str, list[dict]], path: Path,
         schedule: list[dict] = (), longest: dict[tuple, list[dict]] | None = None) -> Path:  # fmt: skip
    """Top left: error vs images per step (log2 x, std error bars); top right: seed-0 val
    curves. With schedule-probe runs, below: the final error against the schedule's epochs
    (``schedule``), and the val curves of the longest probe runs (``longest``: (norm, batch) →
    records)."""
    probe = [r for r in schedule if sum(p["n"] for p in r["points"])]
    fig = Figure(figsize=(12, 9 if probe else 4.5))
    ax, cx, *px = fig.subplots(2, 2).ravel() if probe else fig.subplots(1, 2)
    styles = {}
    for label in dict.fromkeys(r["label"] for r in rows):
        pts = [r for r in rows if r["label"] == label and r["n"]]
        if pts:
            line = ax.errorbar([r["batch"] for r in pts], [r["mean"] for r in pts],
                               yerr=[r["std"] for r in pts], marker="o", capsize=3, label=label,
                               linestyle="--" if "PreciseBN" in label else "-")  # fmt: skip
            styles[label] = line[0].get_color()
    for label, vals in (plan.data.get("paper_values") or {}).items():
        xs = sorted(int(k) for k in vals)
        ax.plot(xs, [vals[x] for x in xs], ":", color=styles.get(label, "gray"), alpha=0.6,
                label=f"{label} (paper, R-50 ImageNet)")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xticks(plan.batches, [str(b) for b in plan.batches])
    ax.invert_xaxis()
    ax.set(xlabel="images per step", ylabel="val error (%)", title="error vs batch size")
    ax.legend(fontsize=8)
    colours = {b: f"C{i}" for i, b in enumerate(plan.batches)}
    for (n, b), ls in ((c, "-" if c[0] == "gn" else "--") for c in plan.cells()):
        recs = sorted(results.get(Plan.name(n, b), []), key=lambda r: r["seed"])
        if recs and recs[0].get("curve"):
            c = recs[0]["curve"]
            cx.plot([p["epoch"] for p in c], [p["error"] for p in c], ls, color=colours.get(b),
                    label=f"{plan.label(n)} {b}/step (seed {recs[0]['seed']})")  # fmt: skip
    cx.set(xlabel="epoch", ylabel="val error (%)", title="val error during training")
    cx.legend(fontsize=7, ncol=2)
    for r in probe:
        pts = [p for p in r["points"] if p["n"]]
        bars = [p["std"] if p["n"] > 1 else r["seed_std"] or 0.0 for p in pts]
        px[0].errorbar([p["epochs"] for p in pts], [p["mean"] for p in pts], marker="o",
                       yerr=bars, capsize=3,
                       linestyle="-" if r["norm"] == "gn" else "--",
                       color=colours.get(r["batch"]), label=f"{r['label']} {r['batch']}/step")  # fmt: skip
    if probe:
        ticks = [plan.epochs, *plan.probe_epochs]
        px[0].set_xscale("log", base=2)
        px[0].set_xticks(ticks, [str(e) for e in ticks])
        px[0].set(xlabel="epochs (schedule length)", ylabel="final val error (%)",
                  title="schedule probe (bars: seed std; one seed: the cell's)")  # fmt: skip
        px[0].legend(fontsize=8)
        top = max(plan.probe_epochs)
        for (n, b), recs in (longest or {}).items():
            r = min(recs, key=lambda r: r["seed"])
            if r.get("curve"):
                px[1].plot([p["epoch"] for p in r["curve"]], [p["error"] for p in r["curve"]],
                           "-" if n == "gn" else "--", color=colours.get(b),
                           label=f"{plan.label(n)} {b}/step, {top} epochs (seed {r['seed']})")  # fmt: skip
        px[1].set(xlabel="epoch", ylabel="val error (%)", title="val error during the longest probe runs")  # fmt: skip
        px[1].legend(fontsize=8)
    fig.tight_layout()
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)
