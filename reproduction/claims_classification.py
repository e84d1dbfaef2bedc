"""The classification rows of the claims table (:mod:`reproduction.claims`): the sweep's
figures from ``docs/study/classification.json``, and the schedule probe's longest schedule
beside them, judged there when each cell has 2 or more seeds."""

from __future__ import annotations

import json
import math
from pathlib import Path

NOT_RUN = "not yet run"


def _cls_rows(path: Path) -> dict[tuple[str, int], tuple[float, float]]:
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    return {(r["label"], int(r["batch"])): (r["mean"], r["std"]) for r in rows if r.get("n")}


def _cls_schedule(path: Path) -> dict[tuple[str, int], dict[int, tuple[float, float, int]]]:
    """The schedule probe: ``{(label, batch): {epochs: (mean error, std, seeds)}}``, runs only."""
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text(encoding="utf-8")).get("schedule") or []
    return {(r["label"], int(r["batch"])): {int(p["epochs"]): (p["mean"], p["std"], p["n"])
            for p in r["points"] if p["n"]} for r in rows}  # fmt: skip


def _longer(ctx, a: tuple[str, int], b: tuple[str, int]):
    """The longest probe schedule past the sweep's with runs of both ``a`` and ``b``, as
    ``(epochs, (a's mean, std), (b's mean, std), seeds, judged)``, or None. ``judged``: both
    have 2 or more seeds there, so the claim is judged at that schedule, closer to the plateau,
    with its own seed noise; otherwise it is shown beside the sweep's verdict."""
    pa, pb = (ctx["schedule"].get(k, {}) for k in (a, b))
    common = sorted(set(pa) & set(pb))
    if len(common) < 2:  # the sweep's own length is always the first
        return None
    e = common[-1]
    n = min(pa[e][2], pb[e][2])
    return e, pa[e][:2], pb[e][:2], n, n >= 2


def _at(e: int, n: int) -> str:
    return f"; at {e} epochs ({n} seed{'s' * (n > 1)}): "


def _gap(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """b - a and its noise."""
    return b[0] - a[0], math.hypot(a[1], b[1])


def cls_bn_small_batch(ctx):
    rows = ctx["classification"]
    if not {("BN", 32), ("BN", 4), ("BN", 2)} <= set(rows):
        return NOT_RUN, None
    (d2, n2), (d4, n4) = _gap(rows["BN", 32], rows["BN", 2]), _gap(rows["BN", 32], rows["BN", 4])
    ours = (
        f"{rows['BN', 32][0]:.1f} → {rows['BN', 4][0]:.1f} → {rows['BN', 2][0]:.1f} % (32 → 4 → 2)"
    )
    verdict = "yes" if d2 > n2 and d4 > n4 else "partly" if d2 > n2 else "no"
    longer = _longer(ctx, ("BN", 32), ("BN", 2))
    if longer is not None:
        e, b32, b2, n, judged = longer
        ours += _at(e, n) + f"{b32[0]:.1f} → {b2[0]:.1f} % (32 → 2)"
        if judged:  # no 4-image cell there: a rise at 2 is at most a partial agreement
            d, noise = _gap(b32, b2)
            verdict = "partly" if d > noise else "no"
    return ours, verdict


def cls_gn_flat(ctx):
    rows = ctx["classification"]
    gn = sorted((b, m) for (label, b), m in rows.items() if label == "GN")
    if len(gn) < 2:
        return NOT_RUN, None
    d, noise = _gap(gn[-1][1], gn[0][1])  # smallest batch minus largest
    ours = f"{gn[-1][1][0]:.1f} → {gn[0][1][0]:.1f} % ({gn[-1][0]} → {gn[0][0]})"
    verdict = "yes" if d <= noise else "no"
    longer = _longer(ctx, ("GN", gn[-1][0]), ("GN", gn[0][0]))
    if longer is not None:
        e, big, small, n, judged = longer
        ours += _at(e, n) + f"{big[0]:.1f} → {small[0]:.1f} %"
        if judged:
            d, noise = _gap(big, small)
            verdict = "yes" if d <= noise else "no"
    return ours, verdict


def cls_gn_vs_bn(ctx):
    rows = ctx["classification"]
    if not {("BN", 32), ("GN", 32)} <= set(rows):
        return NOT_RUN, None
    d, noise = _gap(rows["BN", 32], rows["GN", 32])
    ours = (
        f"GN {rows['GN', 32][0]:.1f} against BN {rows['BN', 32][0]:.1f} % ({d:+.1f} ± {noise:.1f})"
    )
    verdict = "yes" if d <= 1.0 + noise else "no"
    longer = _longer(ctx, ("BN", 32), ("GN", 32))
    if longer is not None:
        e, bn, gn, n, judged = longer
        ours += _at(e, n) + f"GN {gn[0]:.1f} against BN {bn[0]:.1f} %"
        if judged:
            d, noise = _gap(bn, gn)
            ours += f" ({d:+.1f} ± {noise:.1f})"
            verdict = "yes" if d <= 1.0 + noise else "no"
    return ours, verdict


def cls_precise_bn(ctx):
    rows = ctx["classification"]
    if not {("BN", 2), ("BN (PreciseBN)", 2)} <= set(rows):
        return NOT_RUN, None
    d, noise = _gap(rows["BN", 2], rows["BN (PreciseBN)", 2])
    ours = f"{rows['BN', 2][0]:.1f} % EMA against {rows['BN (PreciseBN)', 2][0]:.1f} % PreciseBN"
    return ours, "yes" if d < -noise else "no"
