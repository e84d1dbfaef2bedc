"""The verdict sentences of each family in REPRODUCTION.md, computed from the cells' results.

:func:`analyse` reads a family's ``analysis`` (kind ``batch``, ``order`` or ``gap``, and its
optional ``series``) and compares the measured box AP, mean ± std over seeds, with the paper's
expectation: a difference counts only beyond the combined std of the two cells.
"""

from __future__ import annotations

import math

from reproduction.report import NOT_RUN, CellResult
from reproduction.runner import Study

__all__ = ["analyse"]


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
    # a plateau probe (Family.probe: ``*_12x`` under ``analysis.long``) is judged apart
    long = a.get("long") or {}
    one = [c for c in family.cells.values() if c.name not in family.probe]
    cells = [c for c in family.cells.values() if c.name in family.probe]
    if a.get("kind") == "batch":
        out += _batch(results, a, one)
        if long:
            lines = (
                _batch(results, long, cells, need=2) if any(results[c.id].n for c in cells) else []
            )
            out += [f"At 12x: {t}" if i == 0 else t for i, t in enumerate(lines)]
    elif a.get("kind") == "order" and "expect" in a:
        out += _order(study, fid, a["expect"], results, "the paper's order")
        if "expect_long" in a:
            out += _order(study, fid, a["expect_long"], results, "the paper's order at 12x")
    elif a.get("kind") == "order":
        best, worst = study.cell(f"{fid}/{a.get('best')}"), study.cell(f"{fid}/{a.get('worst')}")
        out += _rank(results, one, best.label, worst.label, "", need=1)
        if long and any(results[c.id].n for c in cells):
            out += _rank(results, cells, long["best"], long["worst"], " at 12x", need=2)
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


def _batch(results: dict[str, CellResult], a: dict, cells: list, need: int = 1) -> list[str]:
    """Sentences for a batch sweep over ``cells``: each label's box AP change from its largest to
    its smallest batch, ``degrades`` against ``flat`` and ``frozen`` at the same batch, and the
    verdict (``degrades`` loses beyond its noise, and more than ``flat`` beyond theirs). The
    verdict waits until the four cells it compares have ``need`` seeds or more (2 for a probe:
    one seed has no noise to judge by)."""
    out, drops, ends = [], {}, {}
    for label in dict.fromkeys(c.label for c in cells):
        done = sorted((c for c in cells if c.label == label and results[c.id].n), key=lambda c: c.x)
        if len(done) < 2:
            out.append(f"{label}: fewer than two batch sizes measured.")
            continue
        lo, hi = done[0], done[-1]
        ends[label] = [hi.id, lo.id]
        d, noise = _diff(results, hi.id, lo.id)
        drops[label] = (-d, noise)
        out.append(f"{label}: box AP {results[hi.id].stat('bbox')[0]:.1f} at {hi.x:g} images "
                   f"per step, {results[lo.id].stat('bbox')[0]:.1f} at {lo.x:g} "
                   f"(change {d:+.1f}, noise ±{noise:.1f}).")  # fmt: skip
    bad, flat = a.get("degrades"), a.get("flat")
    by_x = {(c.label, c.x): c.id for c in cells if results[c.id].n}
    for ref in (flat, a.get("frozen")):
        gaps = [(x, _diff(results, by_x[(ref, x)], by_x[(bad, x)]))
                for x in sorted({x for _, x in by_x}, reverse=True)
                if (bad, x) in by_x and (ref, x) in by_x]  # fmt: skip
        if ref and gaps:
            out.append(f"{bad} − {ref} at the same batch: " + ", ".join(
                f"{d:+.1f} ± {n:.1f} at {x:g}" for x, (d, n) in gaps) + " box AP.")  # fmt: skip
    short = [i for k in (bad, flat) for i in ends.get(k, []) if results[i].n < need]
    if bad in drops and flat in drops and short:
        out.append(
            f"No verdict until every cell it compares has {need} seeds ({', '.join(short)})."
        )
    elif bad in drops and flat in drops:
        (db, nb), (df, nf) = drops[bad], drops[flat]
        agree = db > nb and db > df + math.hypot(nb, nf)
        out.append(f"**{'Agrees' if agree else 'Does not agree'} with the paper**: from the "
                   f"largest to the smallest batch, {bad}'s box AP changes by {-db:+.1f} and "
                   f"{flat}'s by {-df:+.1f}.")  # fmt: skip
    return out


def _rank(results: dict[str, CellResult], cells: list, best: str, worst: str, name: str,
          need: int) -> list[str]:  # fmt: skip
    """The measured order of ``cells`` by box AP, then the verdict: the paper's ``best`` label
    first and its ``worst`` last. The verdict waits until every cell has ``need`` seeds or more
    (2 for a probe, judged with its noise as the other probes are)."""
    done = sorted(
        (c for c in cells if results[c.id].n), key=lambda c: -results[c.id].stat("bbox")[0]
    )
    out = [f"Measured order{name} by box AP: " + " > ".join(
        f"{c.label} {results[c.id].stat('bbox')[0]:.1f}" for c in done) + "."]  # fmt: skip
    short = [c.id for c in cells if results[c.id].n < need]
    if short:
        seeds = "runs" if need == 1 else f"{need} seeds"
        return out + [f"No verdict{name} until every cell has {seeds} ({', '.join(short)})."]
    ok = done[0].label == best and done[-1].label == worst
    return out + [f"**{'Agrees' if ok else 'Does not fully agree'} with the paper{name}**: best is "
                  f"{done[0].label} (paper: {best}), worst is {done[-1].label} (paper: {worst})."]  # fmt: skip


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
