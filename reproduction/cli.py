"""``tools/study.py``: run the reproduction study, estimate its cost, and write REPRODUCTION.md.

    tools/study.py list                                   # cells, steps, runs done
    tools/study.py run --all                              # every cell x every seed (resumable)
    tools/study.py run --cell batch_sweep/gn_b2 --seed 0  # one cell, one seed
    tools/study.py estimate                               # timing probe -> time per cell
    tools/study.py report                                 # tables, plots, REPRODUCTION.md
    tools/study.py classification run --jobs 2            # the classification batch sweep
    tools/study.py classification summarize               # its table and plot (docs/study/)

Runs go to ``--root`` (default ``runs/study``); see :mod:`reproduction.runner` for the layout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from detnorm.config import write_yaml
from detnorm.io import write_json_atomic
from reproduction.runner import (
    CONFIG_DIR,
    cell_config,
    ensure_pretrained,
    invoke,
    load_study,
    machine,
    run_cell,
    run_dir,
)

DEFAULT_ROOT = Path("runs/study")


def _runs_done(study, cell, root: Path) -> int:
    cell = study.resolve(cell)
    return sum((run_dir(root, cell, s) / "metrics.json").is_file() for s in study.seeds)


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


def _timed(tool: str, argv: list[str], log: Path) -> float:
    start = time.perf_counter()
    if invoke(tool, argv, log, in_process=False) != 0:
        raise RuntimeError(f"timing probe failed: tools/{tool} {shlex.join(argv)}; see {log}")
    return time.perf_counter() - start


def _one_image_val(study, root: Path, data: str | None, out: Path) -> Path:
    """A config whose val split is the first val image: training time without evaluation."""
    from detnorm.data.paths import resolve_data_paths
    from detnorm.data.synthetic import ensure_default_dataset

    data = study.data_root(root, data)
    paths = resolve_data_paths(data if data is not None else ensure_default_dataset())
    coco = json.loads(paths["val_ann"].read_text())
    first = coco["images"][0]["id"]
    coco["images"] = coco["images"][:1]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] == first]
    write_json_atomic(out / "val1.json", coco)
    cfg = {k: str(v) for k, v in paths.items()} | {"val_ann": str(out / "val1.json")}
    return write_yaml(out / "val1.yaml", cfg)


def probe(study, root: Path, steps: tuple[int, int], data: str | None) -> dict:
    """Time a GN scratch cell (2 images per step): training seconds per image from two step
    counts evaluated on one image (the slope; start-up and warm-up are the intercept), and the
    full evaluation as the extra time of the shorter run evaluated on the whole val split.
    Pretraining seconds per step likewise from two step counts."""
    base = study.cell("scratch/gn_scratch_1x")
    out = root / "_probe"
    shutil.rmtree(out, ignore_errors=True)
    val1 = _one_image_val(study, root, data, out)
    times = []
    for n, extra in ((steps[0], (val1,)), (steps[1], (val1,)), (steps[0], ())):
        small = dataclasses.replace(study, images_per_cell=2 * n)
        rec = run_cell(small, base, 0, out / f"train_{n}_{'val1' if extra else 'full'}",
                       data=data, extra_configs=extra)  # fmt: skip
        if rec["status"] != "done":
            raise RuntimeError(f"timing probe failed; see {rec['dir']}/train.log")
        times.append(rec["seconds"])
    per_image = (times[1] - times[0]) / (2 * (steps[1] - steps[0]))
    pre = study.pretrain
    p_steps = (steps[0], steps[1])
    p_times = [_timed("pretrain_backbone.py", [*map(str, pre.get("args", [])), "--norm", "gn",
                      "--max-steps", str(n), "--num-val", "64", "--output-dir",
                      str(out / f"pretrain_{n}")], out / f"pretrain_{n}.log")
               for n in p_steps]  # fmt: skip
    return {"train_steps": list(steps), "train_seconds": times, "seconds_per_image": per_image,
            "startup_seconds": times[0] - 2 * steps[0] * per_image,
            "eval_seconds": times[2] - times[0],
            "overhead_seconds": times[2] - 2 * steps[0] * per_image,
            "pretrain_steps": list(p_steps), "pretrain_seconds": p_times,
            "pretrain_seconds_per_step": (p_times[1] - p_times[0]) / (p_steps[1] - p_steps[0]),
            "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip


def cmd_estimate(study, args) -> int:
    path = args.root / "estimate.json"
    if args.no_probe and path.is_file():
        result = json.loads(path.read_text())["probe"]
    else:
        result = probe(study, args.root, tuple(args.probe_steps), args.data)
    rows, total = [], 0.0
    for cell in study.runnable(with_optional=True):
        cfg = cell_config(study, cell)
        images = cfg["max_steps"] * cfg["batch_size"] * cfg.get("devices", 1)
        extra = cfg["precise_bn_iters"] * cfg["batch_size"] / 3 if cfg.get("norm") == "bn" else 0
        est = result["overhead_seconds"] + (images + extra) * result["seconds_per_image"]
        runs = len(study.seeds)
        rows.append({"cell": cell.id, "steps": cfg["max_steps"], "images": images,
                     "seconds_per_run": round(est, 1), "runs": runs, "optional": cell.optional})  # fmt: skip
        total += est * runs / args.jobs if not cell.optional else 0
    args_list = [str(a) for a in study.pretrain.get("args", [])]
    at = args_list.index("--max-steps") + 1 if "--max-steps" in args_list else None
    pre_steps = int(args_list[at]) if at is not None else 1000
    pre = len(study.pretrain.get("backbones", {})) * pre_steps * result["pretrain_seconds_per_step"]
    suggestion = None
    if args.budget_hours:  # total is linear in images_per_cell: solve for the budget
        fixed = (
            pre
            + sum(result["overhead_seconds"] * r["runs"] for r in rows if not r["optional"])
            / args.jobs
        )
        slope = (total + pre - fixed) / study.images_per_cell
        suggestion = int(max(0.0, args.budget_hours * 3600 - fixed) / slope) // 16 * 16
    write_json_atomic(path, {"probe": result, "cells": rows, "pretrain_seconds": round(pre),
                             "suggested_images_per_cell": suggestion, "jobs": args.jobs,
                             "total_seconds": round(total + pre)}, indent=1)  # fmt: skip
    print(
        f"probe: {result['seconds_per_image']:.3f} s per training image, "
        f"{result.get('startup_seconds', 0):.0f} s start-up and warm-up and "
        f"{result.get('eval_seconds', 0):.0f} s evaluation per run; machine {result['machine']}"
    )
    print("| cell | steps | images | s per run | runs |\n|---|---:|---:|---:|---:|")
    for r in rows:
        opt = " (optional)" if r["optional"] else ""
        print(
            f"| {r['cell']}{opt} | {r['steps']} | {r['images']} | {r['seconds_per_run']:.0f} | {r['runs']} |"
        )
    print(f"pretraining {pre / 60:.0f} min; whole study (without optional cells) "
          f"{(total + pre) / 3600:.2f} h; wrote {path}")  # fmt: skip
    if suggestion is not None:
        print(f"images_per_cell that fits {args.budget_hours:g} h: {suggestion} "
              f"(configs/study/study.yaml, or --images {suggestion})")  # fmt: skip
    return 0


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
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="cells, steps and runs done")
    run = sub.add_parser("run", help="train and evaluate cells (skips finished runs)")
    which = run.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every cell of study.yaml")
    which.add_argument("--cell", action="append", metavar="FAMILY/CELL", help="repeatable")
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
    est = sub.add_parser("estimate", help="time per cell from a timing probe")
    est.add_argument("--probe-steps", type=int, nargs=2, default=[8, 24], metavar=("A", "B"))
    est.add_argument(
        "--data", help="dataset root instead of the study's generated dataset (study.yaml: dataset)"
    )
    est.add_argument("--budget-hours", type=float, default=2.0, help="suggest images_per_cell")
    est.add_argument("--jobs", type=int, default=1, help="as for run --jobs (divides the time)")
    est.add_argument("--no-probe", action="store_true", help="reuse <root>/estimate.json's probe")
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
        command = {"list": cmd_list, "run": cmd_run, "estimate": cmd_estimate, "report": cmd_report}
        return command[args.command](study, args)
    except (ValueError, RuntimeError) as e:
        print(f"study.py: error: {e}", file=sys.stderr)
        return 2
