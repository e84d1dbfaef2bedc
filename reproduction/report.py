"""REPRODUCTION.md from the study's run directories: mean ± std tables, PNG plots, verdicts.

Every small-scale number and every sentence about agreement is computed here from the runs'
``metrics.json`` files; a cell without runs reads "not yet run". The paper's numbers come from
each family file's ``paper`` text (quoted from the GN paper and the detectron2 model zoo).
"""

from __future__ import annotations

import math
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
            for label in dict.fromkeys(c.label for c in cells):
                pts = sorted((c.x, *results[c.id].stat(iou)) for c in cells if c.label == label)
                xs, ys, es = zip(*pts, strict=True)
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
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


def _diff(results, a: str, b: str, iou: str = "bbox") -> tuple[float, float] | None:
    """AP(b) - AP(a) and the combined std, or None when either has no runs."""
    sa, sb = results[a].stat(iou), results[b].stat(iou)
    if sa is None or sb is None:
        return None
    return sb[0] - sa[0], math.hypot(sa[1], sb[1])


def _verdict(d: float, noise: float) -> str:
    return "higher" if d > noise else ("lower" if d < -noise else "within noise")


def analyse(study: Study, family, results: dict[str, CellResult]) -> str:
    """Sentences comparing the measured box AP with the paper's expectation."""
    a, fid = family.analysis, family.name
    missing = [c.id for c in family.cells.values() if not results[c.id].n]
    if len(missing) == len(family.cells):
        return f"Small-scale result: {NOT_RUN}."
    out = []
    if missing:
        out.append(f"Cells {NOT_RUN}: {', '.join(missing)}.")
    if a.get("kind") == "batch":
        drops = {}
        for label in dict.fromkeys(c.label for c in family.cells.values()):
            cells = sorted((c for c in family.cells.values() if c.label == label and results[c.id].n),
                           key=lambda c: c.x)  # fmt: skip
            if len(cells) < 2:
                out.append(f"{label}: fewer than two batch sizes measured.")
                continue
            lo, hi = cells[0], cells[-1]
            d, noise = _diff(results, hi.id, lo.id)
            drops[label] = (-d, noise)
            out.append(f"{label}: box AP {results[hi.id].stat('bbox')[0]:.1f} at {hi.x:g} images "
                       f"per step, {results[lo.id].stat('bbox')[0]:.1f} at {lo.x:g} "
                       f"(change {d:+.1f}, noise ±{noise:.1f}).")  # fmt: skip
        bad, flat = a.get("degrades"), a.get("flat")
        by_x = {(c.label, c.x): c.id for c in family.cells.values() if results[c.id].n}
        for ref in (flat, a.get("frozen")):
            gaps = [(x, _diff(results, by_x[(ref, x)], by_x[(bad, x)]))
                    for x in sorted({x for _, x in by_x}, reverse=True)
                    if (bad, x) in by_x and (ref, x) in by_x]  # fmt: skip
            if ref and gaps:
                out.append(f"{bad} − {ref} at the same batch: " + ", ".join(
                    f"{d:+.1f} ± {n:.1f} at {x:g}" for x, (d, n) in gaps) + " box AP.")  # fmt: skip
        if bad in drops and flat in drops:
            (db, nb), (df, nf) = drops[bad], drops[flat]
            agree = db > nb and db > df + math.hypot(nb, nf)
            out.append(f"**{'Agrees' if agree else 'Does not agree'} with the paper**: from the "
                       f"largest to the smallest batch, {bad}'s box AP changes by {-db:+.1f} and "
                       f"{flat}'s by {-df:+.1f}.")  # fmt: skip
    elif a.get("kind") == "order" and "expect" in a:
        out += _order(study, fid, a["expect"], results, "the paper's order")
        if "expect_long" in a:
            out += _order(study, fid, a["expect_long"], results, "the paper's order at 12x")
    elif a.get("kind") == "order":
        ranked = sorted((c for c in family.cells.values() if results[c.id].n),
                        key=lambda c: -results[c.id].stat("bbox")[0])  # fmt: skip
        out.append("Measured order by box AP: " + " > ".join(c.label for c in ranked) + ".")
        best, worst = f"{fid}/{a.get('best')}", f"{fid}/{a.get('worst')}"
        if missing:
            return " ".join(out + ["No verdict until every cell has runs."])
        ok_best = ranked[0].id == best
        ok_worst = ranked[-1].id == worst
        out.append(f"**{'Agrees' if ok_best and ok_worst else 'Does not fully agree'} with the "
                   f"paper**: best is {ranked[0].label} (paper: {study.cell(best).label}), worst is "
                   f"{ranked[-1].label} (paper: {study.cell(worst).label}).")  # fmt: skip
    elif a.get("kind") == "gap":
        gaps = []
        for pre, scr in a["pairs"]:
            dn = _diff(results, f"{fid}/{scr}", f"{fid}/{pre}")
            if dn is not None:
                gaps.append(dn[0])
                out.append(f"{study.cell(f'{fid}/{pre}').label} − {study.cell(f'{fid}/{scr}').label}: "
                           f"{dn[0]:+.1f} box AP (noise ±{dn[1]:.1f}).")  # fmt: skip
        if len(gaps) == len(a["pairs"]) and len(gaps) >= 2:
            agree = gaps[-1] < gaps[0]
            out.append(f"**{'Agrees' if agree else 'Does not agree'} with the paper**: the gap "
                       f"{'shrinks' if agree else 'does not shrink'} from {gaps[0]:.1f} to "
                       f"{gaps[-1]:.1f} box AP with the longest schedule.")  # fmt: skip
    out += [t for t in (_series(study, fid, cells, results) for cells in a.get("series", [])) if t]
    return " ".join(out)


def _order(study: Study, fid: str, expect: list[str], results: dict[str, CellResult],
           name: str) -> list[str]:  # fmt: skip
    """Sentences for one expected order (worst to best): each step's box AP change against its
    noise, then the verdict. The verdict waits until every cell of ``expect`` has runs, 2 or
    more seeds each (one seed has no noise to judge by); a cell outside ``expect`` (an optional
    probe) does not hold it back."""
    ids = [f"{fid}/{c}" for c in expect]
    missing = [i for i in ids if not results[i].n]
    if missing:
        return [f"No verdict on {name} until every cell has runs ({', '.join(missing)})."]
    out = []
    steps = [(x, y, _diff(results, x, y)) for x, y in zip(ids, ids[1:], strict=False)]
    for x, y, dn in steps:
        if dn is not None:
            out.append(f"{study.cell(x).label} → {study.cell(y).label}: box AP {dn[0]:+.1f} "
                       f"(noise ±{dn[1]:.1f}, {_verdict(*dn)}).")  # fmt: skip
    if min(results[i].n for i in ids) < 2:
        return out + [f"No verdict on {name} with one seed in a cell (no noise to judge by)."]
    verdicts = [_verdict(*dn) for _, _, dn in steps if dn is not None]
    ends = _diff(results, ids[0], ids[-1])
    if ends is not None:
        agree = "lower" not in verdicts and _verdict(*ends) == "higher"
        out.append(f"**{'Agrees' if agree else 'Does not agree'} with {name}**: "
                   f"first to last {ends[0]:+.1f} box AP ({_verdict(*ends)}).")  # fmt: skip
    return out


def _series(study: Study, fid: str, cells: list[str], results: dict[str, CellResult]) -> str:
    """One line of cells, in order (a schedule: 1x, 3x, ...): each one's box AP, and what the
    last step added against its noise (the convergence test: a longer run that adds nothing
    beyond the noise is at a plateau). Empty when fewer than two cells have runs."""
    ids = [f"{fid}/{c}" for c in cells if results[f"{fid}/{c}"].n]
    if len(ids) < 2:
        return ""
    pts = [f"{results[i].stat('bbox')[0]:.1f}" + (f" (n={results[i].n})" if results[i].n < 3 else "")
           for i in ids]  # fmt: skip
    d, noise = _diff(results, ids[-2], ids[-1])
    names = " → ".join(study.cell(i).label for i in ids)
    state = {"higher": "still gaining", "within noise": "a plateau"}.get(
        _verdict(d, noise), "lower"
    )
    return (f"Box AP along {names}: {' → '.join(pts)}; the last step adds {d:+.1f} "
            f"(noise ±{noise:.1f}: {state}).")  # fmt: skip


def write_report(study: Study, root: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write REPRODUCTION.md at ``output`` and its PNGs in ``<output dir>/docs/study/``."""
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
    text = render(study, root, output, results, sections)
    records = run_records(study, root)
    if records:
        write_json_atomic(output.parent / "docs" / "study" / "runs.json", records, indent=1)
    backbones = backbone_records(study, root)
    if backbones:
        write_json_atomic(output.parent / "docs" / "study" / "backbones.json", backbones, indent=1)
    return atomic_write(output, lambda f: f.write(text))
