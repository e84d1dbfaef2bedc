"""``reproduction/classification.py estimate``: the sweep's and the schedule probe's time, from
the finished runs of each cell, else from the plan's calibration model."""

from __future__ import annotations

from reproduction.classification import Plan, collect
from reproduction.classification_schedule import collect_probe

__all__ = ["cmd_estimate"]


def cmd_estimate(plan, args) -> int:
    """Seconds per run from finished runs of the cell (mean), else the calibration model."""
    cal, results = plan.data["calibration"], collect(plan, args.root)
    probes = collect_probe(plan, args.root)
    ia = plan.args.index
    num_train, epochs = int(plan.args[ia("--num-train") + 1]), plan.epochs
    total = left_total = 0.0
    print("| cell | steps | s per run | from | runs left |\n|---|---:|---:|---|---:|")
    for n, b in plan.cells():
        steps = round(epochs * (num_train // b))
        recs = results[Plan.name(n, b)]
        if recs:
            sec, src = sum(r["seconds"] for r in recs) / len(recs), f"{len(recs)} runs"
        else:
            per_step = cal["overhead_seconds_per_step"] + b * cal["seconds_per_image"]
            sec, src = cal["startup_seconds"] + steps * per_step, "calibration"
        left = len(plan.seeds) - len(recs)
        total, left_total = total + sec * len(plan.seeds), left_total + sec * left
        print(f"| {Plan.name(n, b)} | {steps} | {sec:.0f} | {src} | {left} |")
        if Plan.name(n, b) not in plan.probe_cells:
            continue
        probe = probes[n, b]
        for e in plan.probe_epochs:  # measured, else the sweep's time scaled by the epochs
            recs_e = probe[e]
            sec_e, src_e = ((sum(r["seconds"] for r in recs_e) / len(recs_e), f"{len(recs_e)} runs")
                            if recs_e else (sec * e / plan.epochs, f"{src} x {e}/{plan.epochs}"))  # fmt: skip
            done = {r["seed"] for r in recs_e}  # seeds beyond the probe's count as run
            left = len(set(plan.probe_seeds) - done)
            runs = len(done | set(plan.probe_seeds))
            total, left_total = total + sec_e * runs, left_total + sec_e * left
            print(f"| {Plan.name(n, b, e)} | {round(e * (num_train // b))} | {sec_e:.0f} | {src_e} | {left} |")  # fmt: skip
    print(f"whole sweep and schedule probe: {total / 60:.0f} process-minutes ({left_total / 60:.0f} left: about "
          f"{left_total / 60 / args.jobs:.0f} min of wall time at --jobs {args.jobs} if "
          f"{args.jobs} cores are free)")  # fmt: skip
    return 0
