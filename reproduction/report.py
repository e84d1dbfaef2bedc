"""REPRODUCTION.md from the study's run directories: mean ± std tables, PNG plots, verdicts.

Every small-scale number and every sentence about agreement is computed here from the runs'
``metrics.json`` files; a cell without runs reads "not yet run". The paper's numbers come from
each family file's ``paper`` text (quoted from the GN paper and the detectron2 model zoo).
"""

from __future__ import annotations

import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from detnorm.io import atomic_write, read_json, write_json_atomic
from reproduction.runner import Study, cell_config, finished, run_dir, run_seconds

__all__ = ["CellResult", "collect", "mean_std", "write_report"]

NOT_RUN = "not yet run"
METRICS = (("bbox", "box AP"), ("segm", "mask AP"))


@dataclass
class CellResult:
    cell_id: str
    values: dict[str, list[float]] = field(default_factory=lambda: {"bbox": [], "segm": []})
    seconds: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    machines: list[dict] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "seed N (why)" for runs without metrics

    @property
    def n(self) -> int:
        return len(self.values["bbox"])

    def stat(self, iou: str) -> tuple[float, float] | None:
        return mean_std(self.values[iou]) if self.values[iou] else None


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def collect(study: Study, root: Path) -> dict[str, CellResult]:
    """``{cell id: CellResult}`` for every cell (``same_as`` cells share their target's runs)."""
    out = {}
    for cell_id in study.cell_ids():
        own = study.resolve(study.cell(cell_id))
        res = CellResult(cell_id)
        for seed in study.seeds:
            d = run_dir(root, own, seed)
            m = finished(study, own, seed, root)
            if m is None:
                if (d / "study.json").is_file() and read_json(d / "study.json").get(
                    "status"
                ) == "failed":
                    res.failed.append(f"seed {seed} ({_why(d / 'train.log')})")
                continue
            for iou, _ in METRICS:
                res.values[iou].append(float(m[iou]["AP"]))
            if "step" in m:
                res.steps.append(int(m["step"]))
            if (d / "study.json").is_file():
                rec = read_json(d / "study.json")
                res.seconds.append(run_seconds(rec))
                res.machines.append(rec.get("machine", {}))
        out[cell_id] = res
    return out


def fmt(stat: tuple[float, float] | None, n: int) -> str:
    if stat is None:
        return NOT_RUN
    return f"{stat[0]:.1f} ± {stat[1]:.1f}" + (f" (n={n})" if n < 3 else "")


def _table(study: Study, family, results: dict[str, CellResult]) -> str:
    lines = ["| cell | setting | steps × images/step | runs | box AP | mask AP | s/run |",
             "|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for cell in family.cells.values():
        r = results[cell.id]
        cfg = cell_config(study, study.resolve(cell))
        per = cfg["batch_size"] * cfg.get("devices", 1)
        secs = f"{statistics.fmean(r.seconds):.0f}" if r.seconds else "-"
        name = cell.id + (f" (= {cell.same_as})" if cell.same_as else "")
        steps = f"{cfg['max_steps']} × {per}"
        if set(r.steps) - {cfg["max_steps"]}:  # runs made with another images_per_cell
            steps += f" (runs stopped at step {', '.join(map(str, sorted(set(r.steps))))})"
        runs = f"{r.n} + {len(r.failed)} failed" if r.failed else str(r.n)
        lines.append(f"| {name} | {cell.label} | {steps} | {runs} | "
                     f"{fmt(r.stat('bbox'), r.n)} | {fmt(r.stat('segm'), r.n)} | {secs} |")  # fmt: skip
    return "\n".join(lines)


def _why(log: Path) -> str:
    """Why a run failed, from its train.log: the non-finite-loss stop, else "see train.log"."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "no train.log"
    m = re.search(r"non-finite loss at step (\d+)", text)
    return f"diverged: non-finite loss at step {m.group(1)}" if m else f"see {log}"


def _failures(family, results: dict[str, CellResult]) -> str:
    """A sentence naming the runs that failed; they are left out of the means."""
    bad = [f"{c.id} {', '.join(results[c.id].failed)}" for c in family.cells.values()
           if results[c.id].failed and not c.same_as]  # fmt: skip
    return f"Failed runs, left out of the means: {'; '.join(bad)}." if bad else ""


def _plot(family, results: dict[str, CellResult], path: Path) -> Path | None:
    cells = [c for c in family.cells.values() if results[c.id].n]
    if not cells:
        return None
    fig = Figure(figsize=(10, 4))
    for k, (iou, title) in enumerate(METRICS):
        ax = fig.add_subplot(1, 2, k + 1)
        if family.plot.get("kind") == "line":
            colours = {}
            for label in dict.fromkeys(c.label for c in cells):
                pts = sorted((c.x, *results[c.id].stat(iou)) for c in cells if c.label == label)
                xs, ys, es = zip(*pts, strict=True)
                # a probe's label "<line> <suffix>" (BN 12x) takes its line's colour, dashed
                base = label.rsplit(" ", 1)[0]
                style = (
                    {"color": colours[base], "ls": "--", "marker": "s"} if base in colours else {}
                )
                bar = ax.errorbar(
                    xs, ys, yerr=es, capsize=3, label=label, **{"marker": "o", **style}
                )
                colours.setdefault(label, bar.lines[0].get_color())
            if family.plot.get("log2"):
                ax.set_xscale("log", base=2)
                ax.set_xticks(sorted({c.x for c in family.cells.values() if c.x}))
                ax.set_xticklabels([str(int(c)) for c in ax.get_xticks()])
            ax.set_xlabel(family.plot.get("xlabel", "x"))
            ax.legend()
        else:
            stats = [results[c.id].stat(iou) for c in cells]
            ax.bar(range(len(cells)), [s[0] for s in stats], yerr=[s[1] for s in stats], capsize=3)
            ax.set_xticks(range(len(cells)))
            ax.set_xticklabels([c.label for c in cells], rotation=20, ha="right", fontsize=7)
        ax.set_ylabel(f"{title} (mean ± std over seeds)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    fig.suptitle(family.title, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)
    return path


def write_report(study: Study, root: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write REPRODUCTION.md at ``output`` and its PNGs in ``<output dir>/docs/study/``."""
    from reproduction.analysis import analyse
    from reproduction.curves import family_curves, partial, plateau_text, plot_curves
    from reproduction.report_text import render
    from reproduction.restore import backbone_records, run_records

    root, output = Path(root), Path(output)
    results = collect(study, root)
    sections = []
    for family in study.families.values():
        docs = output.parent / "docs" / "study"
        png = _plot(family, results, docs / f"{family.name}.png")
        curves = family_curves(study, family, root)
        curve_png = docs / f"{family.name}_curves.png"
        # with only partial (restored) curves left, keep the plot drawn from the full ones
        if not (curves and all(partial(c) for c in curves.values()) and curve_png.is_file()):
            curve_png = plot_curves(study, family, curves, curve_png)
        text = " ".join(
            t for t in (analyse(study, family, results), _failures(family, results)) if t
        )
        sections.append((family, _table(study, family, results), [p for p in (png, curve_png) if p],
                         " ".join(t for t in (text, plateau_text(study, family, curves)) if t)))  # fmt: skip
    records = run_records(study, root)
    committed = output.parent / "docs" / "study" / "backbones.json"
    backbones = backbone_records(study, root, read_json(committed) if committed.is_file() else ())
    text = render(study, root, output, results, sections, backbones=backbones, runs=records)
    if records:
        write_json_atomic(output.parent / "docs" / "study" / "runs.json", records, indent=1)
    if backbones:
        write_json_atomic(committed, backbones, indent=1)
    return atomic_write(output, lambda f: f.write(text))
