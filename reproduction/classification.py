#!/usr/bin/env python
"""The classification batch sweep (GN paper Figure 1 / Table 2 at small scale): BN vs GN.

    python reproduction/classification.py run --jobs 2          # every cell x seed (resumable)
    python reproduction/classification.py run --seed 0 --jobs 2 # one stage: one seed of each cell
    python reproduction/classification.py run --norm bn --batch 2 --seed 1
    python reproduction/classification.py summarize             # docs/study/classification.*
    python reproduction/classification.py run --epochs 32 --jobs 2  # the schedule probe at 32
    python reproduction/classification.py estimate --jobs 2     # the plan's time

The plan is ``configs/study/classification.yaml``. A cell is ``<norm>_b<batch>``; each (cell,
seed) is one ``tools/pretrain_backbone.py`` process (one OMP thread; ``--jobs`` of them at once)
in ``<root>/classification/<cell>/seed<N>/``, which gets ``train.log``, ``pretrain.json`` and, when
it finished, ``result.json`` (val error, PreciseBN error for BN, the val-error curve, seconds,
machine; written atomically). A run with ``result.json`` is skipped; an unfinished one restarts.
Stages: ``run --seed N`` finishes one seed of every cell (commit its runs, then the next seed).
``run --epochs E`` trains the plan's ``schedule_probe`` cells at E epochs instead, into
``<cell>_e<E>/`` (:mod:`reproduction.classification_schedule`: is the sweep's error a plateau?).
Every command first restores the committed runs (``docs/study/classification.json``) that the
runs folder lacks, so a fresh clone resumes and summarizes without losing them (``--no-restore``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone

from detnorm.io import atomic_write, read_json, write_json_atomic  # noqa: E402
from reproduction.classification_schedule import (  # noqa: E402
    collect_probe,
    probe_selection,
    restore,
    schedule_markdown,
    schedule_rows,
)
from reproduction.manifest import CONFIG_DIR  # noqa: E402
from reproduction.report import mean_std  # noqa: E402
from reproduction.restore import COMMITTED  # noqa: E402
from reproduction.runner import invoke, machine  # noqa: E402

__all__ = ["Plan", "load_plan", "main", "run_one", "summarize", "table"]

FAMILY = "classification"
DEFAULT_ROOT = Path("runs/study")
DEFAULT_DOCS = Path("docs/study")


class Plan:
    """``configs/study/classification.yaml``: norms x batches x seeds and the shared flags."""

    def __init__(self, data: dict, path: Path):
        self.path, self.data = path, data
        self.seeds = [int(s) for s in data["seeds"]]
        self.batches = [int(b) for b in data["batches"]]
        self.norms = {str(k): v for k, v in data["norms"].items()}
        self.args = [str(a) for a in data["args"]]
        self.epochs = int(float(self.args[self.args.index("--epochs") + 1]))
        probe = data.get("schedule_probe") or {}
        self.probe_epochs = [int(e) for e in probe.get("epochs", [])]
        self.probe_cells = [str(c) for c in probe.get("cells", [])]
        self.probe_seeds = [int(s) for s in probe.get("seeds", self.seeds[:1])]
        names = [self.name(n, b) for n, b in self.cells()]
        bad = [c for c in self.probe_cells if c not in names]
        if bad:
            raise ValueError(f"{path}: schedule_probe cell {bad[0]!r} is not in the sweep "
                             f"({', '.join(names)})")  # fmt: skip

    def cells(self) -> list[tuple[str, int]]:
        return [(n, b) for n in self.norms for b in self.batches]

    @staticmethod
    def name(norm: str, batch: int, epochs: int | None = None) -> str:
        """``bn_b2`` for the sweep's schedule; ``bn_b2_e32`` for a schedule-probe run."""
        return f"{norm}_b{batch}" + (f"_e{epochs}" if epochs else "")

    def label(self, norm: str) -> str:
        return str(self.norms[norm].get("label", norm.upper()))

    def argv(self, norm: str, batch: int, seed: int, out: Path, extra: list[str],
             epochs: int | None = None) -> list[str]:  # fmt: skip
        longer = ["--epochs", str(epochs)] if epochs else []  # the last --epochs wins
        return [*self.args, *map(str, self.norms[norm]["args"]), "--batch-size", str(batch),
                "--seed", str(seed), *longer, *extra, "--output-dir", str(out)]  # fmt: skip

    def recipe(self) -> dict:
        """What makes a run of this plan: committed runs are restored only into the same recipe."""
        return {"args": self.args, "norms": {n: [str(a) for a in v["args"]] for n, v in self.norms.items()}}  # fmt: skip

    def select(self, norms=None, batches=None, cells=None) -> list[tuple[str, int]]:
        """The cells chosen by ``--norm``/``--batch``/``--cell``; ValueError names a bad one."""
        names = [self.name(n, b) for n, b in self.cells()]
        for what, given, known in (("norm", norms, list(self.norms)),
                                   ("batch", batches, self.batches), ("cell", cells, names)):  # fmt: skip
            bad = [g for g in given or [] if g not in known]
            if bad:
                raise ValueError(f"unknown {what} {bad[0]!r}; the plan has {', '.join(map(str, known))}")  # fmt: skip
        return [(n, b) for n, b in self.cells() if (not norms or n in norms)
                and (not batches or b in batches) and (not cells or self.name(n, b) in cells)]  # fmt: skip


def load_plan(path: Path = CONFIG_DIR / "classification.yaml") -> Plan:
    try:
        return Plan(yaml.safe_load(Path(path).read_text(encoding="utf-8")), Path(path))
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: cannot read the plan ({' '.join(str(e).split())})") from None


def run_dir(root: Path, norm: str, batch: int, seed: int, epochs: int | None = None) -> Path:
    """The sweep's run (``epochs`` None) or a schedule-probe run at ``epochs``."""
    return Path(root) / FAMILY / Plan.name(norm, batch, epochs) / f"seed{seed}"


def run_one(plan: Plan, norm: str, batch: int, seed: int, root: Path, *, extra: list[str] = (),
            in_process: bool = False, threads: int = 1, epochs: int | None = None) -> dict:  # fmt: skip
    """Train one (cell, seed) unless its ``result.json`` exists; returns its record. ``epochs``
    (a schedule-probe run) replaces the plan's epochs."""
    out = run_dir(root, norm, batch, seed, epochs)
    if (out / "result.json").is_file():
        return read_json(out / "result.json") | {"status": "skipped"}
    if out.exists():  # unfinished: start again from the beginning
        shutil.rmtree(out)
    out.mkdir(parents=True)
    argv = plan.argv(norm, batch, seed, out, list(extra), epochs)
    before = machine() | {"omp_num_threads": str(threads)}
    start = time.perf_counter()
    rc = invoke("pretrain_backbone.py", argv, out / "train.log", in_process, threads)
    seconds = round(time.perf_counter() - start, 1)
    record = {"cell": Plan.name(norm, batch, epochs), "norm": norm, "label": plan.label(norm),
              "batch": batch, "seed": seed, "exit": rc, "seconds": seconds,
              "argv": ["tools/pretrain_backbone.py", *argv], "machine": before,
              "loadavg_end": machine()["loadavg"], "date": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
    if rc != 0 or not (out / "pretrain.json").is_file():
        return record | {"status": "failed", "dir": str(out)}
    meta = read_json(out / "pretrain.json")
    keys = ("val_error", "val_error_precise_bn", "precise_bn_batches", "steps",
            "steps_per_epoch", "lr", "warmup_steps", "train_seconds", "data", "width", "curve")  # fmt: skip
    record |= {k: meta.get(k) for k in keys} | {"status": "done", "epochs": epochs or plan.epochs}
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    for name in ("metrics.csv", "hparams.yaml"):  # per-step logs: the curve is in result.json
        (out / name).unlink(missing_ok=True)
    write_json_atomic(out / "result.json", record, indent=1)
    return record


def cmd_run(plan: Plan, args) -> int:
    epochs, cells, seeds = probe_selection(plan, args)
    # seed-major (a stage is one seed of every cell); within a seed the slowest cells first
    jobs = [(n, b, s) for s in seeds for n, b in sorted(cells, key=lambda c: c[1])]
    extra = args.extra.split() if args.extra else []
    start, failed = time.perf_counter(), 0

    def one(job):
        return run_one(plan, *job, args.root, extra=extra, in_process=args.in_process,
                       epochs=epochs)  # fmt: skip

    with ThreadPoolExecutor(max_workers=1 if args.in_process else args.jobs) as pool:
        for i, rec in enumerate(pool.map(one, jobs), 1):
            line = f"[{i}/{len(jobs)}] {rec['cell']} seed {rec['seed']}: {rec['status']}"
            pbn = rec.get("val_error_precise_bn")
            if rec["status"] == "failed":
                failed += 1
                line += f" (exit {rec['exit']}; see {rec['dir']}/train.log)"
            else:
                line += f", val error {rec['val_error']:.2f}%" + ("" if pbn is None else f" (PreciseBN {pbn:.2f}%)") + f" ({rec['seconds']:.0f} s)"  # fmt: skip
            print(line, flush=True)
    print(f"{len(jobs)} runs ({failed} failed) in {time.perf_counter() - start:.0f} s; "
          f"next: reproduction/classification.py summarize --root {args.root}")  # fmt: skip
    return 1 if failed else 0


def collect(plan: Plan, root: Path) -> dict[str, list[dict]]:
    """``{cell: [result records of finished seeds]}`` for every cell of the plan."""
    paths = {Plan.name(n, b): [run_dir(root, n, b, s) / "result.json" for s in plan.seeds]
             for n, b in plan.cells()}  # fmt: skip
    return {cell: [read_json(p) for p in ps if p.is_file()] for cell, ps in paths.items()}


def table(plan: Plan, results: dict[str, list[dict]]) -> list[dict]:
    """One row per (norm, batch) and one per BN batch with PreciseBN: mean ± std over seeds."""
    rows = []
    for n, b in plan.cells():
        recs = results.get(Plan.name(n, b), [])
        variants = [("val_error", plan.label(n))]
        if any(r.get("val_error_precise_bn") is not None for r in recs):
            variants.append(("val_error_precise_bn", f"{plan.label(n)} (PreciseBN)"))
        for key, label in variants:
            vals = [float(r[key]) for r in recs if r.get(key) is not None]
            mean, std = mean_std(vals) if vals else (None, None)
            rows.append({"label": label, "norm": n, "batch": b, "metric": key, "n": len(vals),
                         "values": vals, "mean": mean, "std": std,
                         "seconds": [r["seconds"] for r in recs]})  # fmt: skip
    return rows


def _cell(row: dict | None) -> str:
    return f"{row['mean']:.1f} ± {row['std']:.1f} ({row['n']})" if row and row["n"] else "not yet run"  # fmt: skip


def markdown(plan: Plan, rows: list[dict], schedule: list[dict] = ()) -> str:
    by = {(r["label"], r["batch"]): r for r in rows}
    labels = list(dict.fromkeys(r["label"] for r in rows))
    head = "| images per step | " + " | ".join(map(str, plan.batches)) + " |"
    lines = [f"# {plan.data.get('title', 'Classification batch sweep')}", "",
             "Val error (%), mean ± sample std over seeds (runs), at equal epochs.", "", head,
             "|---|" + "---:|" * len(plan.batches)]  # fmt: skip
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(_cell(by.get((label, b))) for b in plan.batches) + " |")  # fmt: skip
    done = [s for r in rows if r["metric"] == "val_error" for s in r["seconds"]]
    lines += ["", f"{len(done)} runs, {sum(done) / 60:.0f} process-minutes. Recipe: "
              f"`tools/pretrain_backbone.py {' '.join(plan.args)}` plus each norm's flags "
              "(configs/study/classification.yaml).", "", *schedule_markdown(plan, list(schedule)),
              "## Paper", "",
              plan.data.get("paper", "").strip(), "", "## Notes", "", plan.data.get("notes", "").strip(),
              "", "![error vs images per step; val curves](classification.png)", ""]  # fmt: skip
    return "\n".join(lines)


def summarize(plan: Plan, root: Path, docs: Path) -> dict:
    from reproduction.classification_plot import plot

    results, probe = collect(plan, root), collect_probe(plan, root)
    rows, schedule = table(plan, results), schedule_rows(plan, probe)
    docs.mkdir(parents=True, exist_ok=True)
    every = dict(results)  # the sweep's cells, then the probe's longer runs
    for (n, b), by_epochs in probe.items():
        every |= {Plan.name(n, b, e): rs for e, rs in by_epochs.items() if e != plan.epochs and rs}
    curves = {c: [{"seed": r["seed"], "curve": r.get("curve")} for r in rs] for c, rs in every.items()}  # fmt: skip
    keep = ("cell", "seed", "epochs", "val_error", "val_error_precise_bn", "steps", "lr", "seconds", "machine", "date")  # fmt: skip
    runs = [{k: r.get(k) for k in keep} for rs in every.values() for r in rs]
    out = {"recipe": plan.recipe(), "rows": rows, "schedule": schedule, "runs": runs, "curves": curves}  # fmt: skip
    write_json_atomic(docs / "classification.json", out, indent=1)
    atomic_write(docs / "classification.md", lambda f: f.write(markdown(plan, rows, schedule)))
    top = max(plan.probe_epochs, default=None)
    longest = {(n, b): rs[top] for (n, b), rs in probe.items() if rs.get(top)}
    plot(plan, rows, results, docs / "classification.png", schedule, longest)
    return {"rows": rows, "results": results, "schedule": schedule}


def cmd_summarize(plan: Plan, args) -> int:
    out = summarize(plan, args.root, args.docs)
    print(markdown(plan, out["rows"]).split("## Paper")[0].strip())
    print(f"wrote {args.docs}/classification.{{json,md,png}}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="classification.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--plan", type=Path, default=CONFIG_DIR / "classification.yaml")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="runs folder (runs/study)")
    p.add_argument("--no-restore", action="store_true",
                   help="leave out the committed runs (docs/study/classification.json) the root lacks")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train the cells (skips runs with result.json)")
    run.add_argument("--norm", action="append", help="only this norm (repeatable)")
    run.add_argument("--batch", type=int, action="append", help="only this batch (repeatable)")
    run.add_argument("--cell", action="append", help="only this cell, e.g. bn_b2 (repeatable)")
    run.add_argument("--seed", type=int, action="append", help="repeatable (default: plan's)")
    run.add_argument("--epochs", type=int, help="a schedule_probe length: its cells at E epochs")
    run.add_argument("--jobs", type=int, default=1, help="runs at once, one thread each")
    run.add_argument("--extra", default="", help="extra tools/pretrain_backbone.py flags")
    run.add_argument("--in-process", action="store_true", help="no subprocess (tests)")
    summ = sub.add_parser("summarize", help="table and plot into --docs")
    summ.add_argument("--docs", type=Path, default=DEFAULT_DOCS)
    est = sub.add_parser("estimate", help="the plan's time from runs or calibration")
    est.add_argument("--jobs", type=int, default=2)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = load_plan(args.plan)
        if args.command in ("run", "estimate") and args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
        if args.command == "run" and any(x < 0 for x in args.seed or []):
            raise ValueError(f"--seed must be >= 0, got {min(args.seed)}")
        if not args.no_restore:
            n = restore(plan, args.root, COMMITTED / "classification.json")
            if n:
                print(f"restored {n} committed runs into {args.root} (docs/study/classification.json)")  # fmt: skip
        from reproduction.classification_estimate import cmd_estimate

        cmd = {"run": cmd_run, "summarize": cmd_summarize, "estimate": cmd_estimate}
        return cmd[args.command](plan, args)
    except (ValueError, RuntimeError) as e:
        print(f"classification.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
