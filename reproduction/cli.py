"""``tools/study.py``: run the reproduction study, estimate its cost, and write REPRODUCTION.md.

    tools/study.py list                                   # cells, steps, runs done
    tools/study.py run --all                              # every cell x every seed (resumable)
    tools/study.py run --cell batch_sweep/gn_b2 --seed 0  # one cell, one seed
    tools/study.py estimate                               # timing probe -> time per cell
    tools/study.py report                                 # tables, plots, REPRODUCTION.md
    tools/study.py classification run --jobs 2            # the classification batch sweep
    tools/study.py classification summarize               # its table and plot (docs/study/)

Runs go to ``--root`` (default ``runs/study``); see :mod:`reproduction.runner` for the layout.
With the committed configs, every command first restores the committed runs that the root
lacks (:mod:`reproduction.restore`), so a fresh clone skips them and reports them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reproduction.runner import (
    CONFIG_DIR,
    cell_config,
    ensure_pretrained,
    finished,
    load_study,
    run_cell,
)

DEFAULT_ROOT = Path("runs/study")


def _runs_done(study, cell, root: Path) -> int:
    cell = study.resolve(cell)
    return sum(finished(study, cell, s, root) is not None for s in study.seeds)


def cmd_list(study, args) -> int:
    print(
        "| cell | label | pretrain | steps | images/step | runs done |\n|---|---|---|---:|---:|---:|"
    )
    for cell_id in study.cell_ids():
        cell = study.cell(cell_id)
        own = study.resolve(cell)
        cfg = cell_config(study, own)
        per_step = cfg["batch_size"] * cfg.get("devices", 1)
        note = f" (= {own.id})" if cell.same_as else (" (optional)" if cell.optional else "")
        print(f"| {cell_id}{note} | {cell.label} | {own.pretrain or 'scratch'} | "
              f"{cfg['max_steps']} | {per_step} | {_runs_done(study, cell, args.root)}/{len(study.seeds)} |")  # fmt: skip
    return 0


def cmd_run(study, args) -> int:
    if args.all:
        cells = study.runnable(with_optional=args.with_optional)
    elif args.stage is not None:
        cells = study.stage_cells(args.stage, with_optional=args.with_optional)
    else:
        owners = {study.resolve(study.cell(c)).id: None for c in args.cell}
        cells = [study.cell(c) for c in owners]
    seeds = args.seed if args.seed is not None else study.seeds
    jobs = [(c, s) for s in seeds for c in cells]  # seed-major: a cut-short study covers every cell
    failed = 0
    start = time.perf_counter()
    parallel = args.jobs > 1 and not args.in_process
    threads = args.threads or (1 if parallel else None)
    if parallel:  # dataset and backbones first, so parallel cells never race for them
        study.data_root(args.root, args.data)
        names = list(dict.fromkeys(c.pretrain for c in cells if c.pretrain))
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(lambda name: ensure_pretrained(study, name, args.root, threads=threads,
                                                         extra_args=args.pretrain_args), names))  # fmt: skip

    def one(job):
        return run_cell(study, job[0], job[1], args.root, data=args.data,
                        extra_configs=args.config, in_process=args.in_process,
                        keep_checkpoints=args.keep_checkpoints,
                        pretrain_args=args.pretrain_args, threads=threads)  # fmt: skip

    with ThreadPoolExecutor(max_workers=args.jobs if parallel else 1) as pool:
        records = pool.map(one, jobs)
        for i, ((cell, seed), rec) in enumerate(zip(jobs, records, strict=True), 1):
            failed += _report_line(i, len(jobs), cell, seed, rec)
    print(f"{len(jobs)} runs ({failed} failed) in {time.perf_counter() - start:.0f} s; "
          f"next: tools/study.py report --root {args.root}")  # fmt: skip
    return 1 if failed else 0


def _report_line(i: int, n: int, cell, seed: int, rec: dict) -> int:
    """Print one finished run; returns 1 when it failed."""
    line = f"[{i}/{n}] {cell.id} seed {seed}: {rec['status']}"
    if rec["status"] == "done":
        m = json.loads((Path(rec["dir"]) / "metrics.json").read_text())
        line += f", box AP {m['bbox']['AP']:.1f}, mask AP {m['segm']['AP']:.1f} ({rec['seconds']:.0f} s)"
    elif rec["status"] == "failed":
        line += f" (exit {rec['exit']}; see {rec['dir']}/train.log)"
    print(line, flush=True)
    return int(rec["status"] == "failed")


def cmd_report(study, args) -> int:
    from reproduction.report import write_report

    path = write_report(study, args.root, args.output)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="study.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", type=Path, default=CONFIG_DIR, help="study config folder")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="runs folder (runs/study)")
    p.add_argument("--images", type=int, help="override images_per_cell (e.g. a quick pass)")
    p.add_argument("--no-restore", action="store_true",
                   help="leave out the committed runs (docs/study/runs.json) that the root lacks")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="cells, steps and runs done")
    run = sub.add_parser("run", help="train and evaluate cells (skips finished runs)")
    which = run.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every cell of study.yaml")
    which.add_argument("--cell", action="append", metavar="FAMILY/CELL", help="repeatable")
    which.add_argument(
        "--stage", type=int, metavar="N", help="the families of study.yaml's stage N"
    )
    run.add_argument("--seed", type=int, action="append", help="repeatable (default: study seeds)")
    run.add_argument("--with-optional", action="store_true", help="also the optional cells")
    run.add_argument(
        "--data", help="dataset root instead of the study's generated dataset (study.yaml: dataset)"
    )
    run.add_argument("--config", action="append", default=[], help="extra config over each cell")
    run.add_argument("--pretrain-args", default="", help="extra tools/pretrain_backbone.py flags")
    run.add_argument("--keep-checkpoints", action="store_true", help="keep each run's .ckpt files")
    run.add_argument("--jobs", type=int, default=1, help="runs at once (each with --threads)")
    run.add_argument(
        "--threads", type=int, help="OMP threads per run (default: torch's; 1 with --jobs > 1)"
    )
    run.add_argument(
        "--in-process", action="store_true", help="detnorm.cli.train.main, no subprocess"
    )
    est = sub.add_parser("estimate", help="time per cell, per stage and in all")
    est.add_argument("--probe", action="store_true", help="time a probe even when runs exist")
    est.add_argument("--probe-steps", type=int, nargs=2, default=[8, 24], metavar=("A", "B"))
    est.add_argument(
        "--data", help="dataset root instead of the study's generated dataset (study.yaml: dataset)"
    )
    est.add_argument("--jobs", type=int, default=1, help="as for run --jobs (divides the time)")
    est.add_argument("--no-probe", action="store_true", help="reuse <root>/estimate.json's rates")
    rep = sub.add_parser("report", help="tables, plots and REPRODUCTION.md")
    rep.add_argument("--output", type=Path, default=Path("REPRODUCTION.md"))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["classification"]:  # the classification batch sweep (paper Figure 1)
        from reproduction.classification import main as classification_main

        return classification_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        study = load_study(args.configs, images=args.images)
        if args.images is None and not args.no_restore and args.configs.resolve() == CONFIG_DIR:
            from reproduction.restore import restore

            if n := restore(study, args.root):
                print(f"restored {n} committed runs into {args.root} (docs/study/runs.json)")
        from reproduction.estimate import cmd_estimate

        command = {"list": cmd_list, "run": cmd_run, "estimate": cmd_estimate, "report": cmd_report}
        return command[args.command](study, args)
    except (ValueError, RuntimeError) as e:
        print(f"study.py: error: {e}", file=sys.stderr)
        return 2
