"""The classification sweep's schedule probe and its committed runs.

The schedule probe (``schedule_probe`` in ``configs/study/classification.yaml``) trains a few
cells of the sweep again at longer schedules (for example 16 and 32 epochs against the sweep's
8), with the same recipe otherwise: the cosine decay and the 5 % warmup stretch with the run. It
answers whether the sweep's errors are a plateau. A cosine schedule always flattens the curve
at its end, so a flat last epoch says nothing; the test is what doubling the epochs changes,
against the seed-to-seed noise (the sweep's sample std of that cell).

:func:`restore` writes the committed runs (``docs/study/classification.json``) that a runs
folder lacks as ``result.json`` files, so that a fresh clone continues the sweep and summarizes
it without losing them; it restores only into the recipe the runs were made with.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

from detnorm.io import read_json, write_json_atomic
from reproduction.report import mean_std
from reproduction.restore import root_lock

__all__ = ["collect_probe", "probe_selection", "restore", "schedule_markdown", "schedule_rows"]

CELL = re.compile(r"^(?P<norm>[a-z_]+?)_b(?P<batch>\d+)(?:_e(?P<epochs>\d+))?$")


def collect_probe(plan, root: Path) -> dict[tuple[str, int], dict[int, list[dict]]]:
    """``{(norm, batch): {epochs: [result records]}}`` for the probe cells, the sweep's own
    epochs included; every seed of the sweep or the probe that has a run counts."""
    from reproduction.classification import Plan, run_dir

    out = {}
    for name in plan.probe_cells:
        n, b = next((n, b) for n, b in plan.cells() if Plan.name(n, b) == name)
        out[n, b] = {}
        for e in [plan.epochs, *plan.probe_epochs]:
            paths = [run_dir(root, n, b, s, None if e == plan.epochs else e) / "result.json"
                     for s in sorted({*plan.seeds, *plan.probe_seeds})]  # fmt: skip
            out[n, b][e] = [read_json(p) for p in paths if p.is_file()]
    return out


def probe_selection(plan, args) -> tuple[int | None, list[tuple[str, int]], list[int]]:
    """``run --epochs E``: the sweep (E None or the plan's) or the schedule probe's cells at E."""
    from reproduction.classification import Plan

    cells = plan.select(args.norm, args.batch, args.cell)
    if args.epochs is None or args.epochs == plan.epochs:
        return None, cells, args.seed if args.seed is not None else plan.seeds
    allowed = ", ".join(map(str, [plan.epochs, *plan.probe_epochs]))
    if args.epochs not in plan.probe_epochs:
        raise ValueError(f"--epochs {args.epochs} is not in the plan: the sweep runs "
                         f"{plan.epochs} and schedule_probe lists {allowed} ({plan.path})")  # fmt: skip
    outside = [Plan.name(n, b) for n, b in cells if Plan.name(n, b) not in plan.probe_cells]
    if args.cell and outside:
        raise ValueError(f"--cell {outside[0]} is not in schedule_probe's cells "
                         f"({', '.join(plan.probe_cells)}); --epochs {args.epochs} runs only those")  # fmt: skip
    cells = [c for c in cells if Plan.name(*c) in plan.probe_cells]
    return args.epochs, cells, args.seed if args.seed is not None else plan.probe_seeds


def schedule_rows(plan, probe: dict) -> list[dict]:
    """One row per probe cell: the mean error at each schedule over the seeds run there, what
    the last doubling with runs changed, and its noise: the combined sample std of the two means
    (as the claims table takes it), where a point of one seed takes the std of the cell's point
    with the most seeds (the longer schedule on a tie)."""
    rows = []
    for (n, b), by_epochs in probe.items():
        points = []
        for e, recs in sorted(by_epochs.items()):
            vals = [float(r["val_error"]) for r in recs]
            mean, std = mean_std(vals) if vals else (None, None)
            points.append({"epochs": e, "n": len(vals), "mean": mean, "std": std, "values": vals,
                           "seconds": [r["seconds"] for r in recs]})  # fmt: skip
        done = [p for p in points if p["n"]]
        most = max(done, key=lambda p: (p["n"], p["epochs"]), default=None)
        seed_std = most["std"] if most is not None and most["n"] > 1 else None
        change = verdict = noise = None
        if len(done) >= 2 and seed_std is not None:
            a, b_ = (p["std"] if p["n"] > 1 else seed_std for p in done[-2:])
            noise = math.hypot(a, b_)
            change = done[-2]["mean"] - done[-1]["mean"]  # > 0: the longer schedule is better
            verdict = ("a plateau" if abs(change) <= noise else
                       "still falling" if change > 0 else "higher")  # fmt: skip
        rows.append({"cell": plan.name(n, b), "label": plan.label(n), "norm": n, "batch": b,
                     "points": points, "seed_std": seed_std, "noise": noise, "last_change": change,
                     "last_step": [p["epochs"] for p in done[-2:]], "verdict": verdict})  # fmt: skip
    return rows


def schedule_markdown(plan, rows: list[dict]) -> list[str]:
    """The probe's section of ``classification.md`` (empty without a schedule probe)."""
    if not rows:
        return []
    epochs = [plan.epochs, *plan.probe_epochs]
    lines = ["## Schedule probe: is the error at the sweep's epochs a plateau?", "",
             "Val error (%), mean over the seeds run at each schedule (seeds), with the cosine "
             "decay and the warmup stretched with the run. The reading compares what the last "
             "doubling with runs changed with its noise: the combined sample std of the two "
             "means, a one-seed point taking the std of the cell's point with the most seeds.", "",
             "| cell | " + " | ".join(f"{e} epochs" for e in epochs) + " | last doubling | noise | reading |",  # fmt: skip
             "|---|" + "---:|" * len(epochs) + "---:|---:|---|"]  # fmt: skip
    for r in rows:
        by = {p["epochs"]: p for p in r["points"]}
        cells = [f"{by[e]['mean']:.1f} ({by[e]['n']})" if by.get(e) and by[e]["n"] else "not yet run"
                 for e in epochs]  # fmt: skip
        change = "" if r["last_change"] is None else (
            f"{-r['last_change']:+.1f} ({r['last_step'][0]} → {r['last_step'][1]})")  # fmt: skip
        noise = "" if r["noise"] is None else f"±{r['noise']:.1f}"
        lines.append(f"| {r['label']} {r['batch']}/step | " + " | ".join(cells) +
                     f" | {change} | {noise} | {r['verdict'] or 'not yet run'} |")  # fmt: skip
    return [*lines, ""]


def restore(plan, root: Path, committed: Path) -> int:
    """Write each run of ``committed`` (a ``classification.json``) that ``root`` lacks finished
    as its ``result.json``, when the file's recipe is the plan's; returns how many."""
    if not Path(committed).is_file():
        return 0
    data = read_json(committed, "the committed classification sweep")
    if not isinstance(data, dict) or data.get("recipe") != plan.recipe():
        return 0
    from reproduction.classification import FAMILY

    curves = {(c, int(x["seed"])): x.get("curve") for c, xs in data.get("curves", {}).items()
              for x in xs}  # fmt: skip
    count = 0
    with root_lock(Path(root)):
        for run in data.get("runs", []):
            m = CELL.match(str(run.get("cell", "")))
            if m is None or m["norm"] not in plan.norms:
                continue
            out = Path(root) / FAMILY / run["cell"] / f"seed{int(run['seed'])}"
            if (out / "result.json").is_file():
                continue
            if out.exists():  # unfinished here: the committed run replaces it
                shutil.rmtree(out)
            out.mkdir(parents=True)
            record = run | {"norm": m["norm"], "label": plan.label(m["norm"]),
                            "batch": int(m["batch"]), "epochs": int(m["epochs"] or plan.epochs),
                            "curve": curves.get((run["cell"], int(run["seed"]))),
                            "status": "done", "restored": True}  # fmt: skip
            write_json_atomic(out / "result.json", record, indent=1)
            count += 1
    return count
