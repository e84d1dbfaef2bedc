"""``tools/study.py estimate``: the study's time on this machine, per cell, per stage, in all.

The rates come from the study's own finished runs under ``--root`` when at least three exist:
a least-squares line of each run's wall seconds against its training images and its extra
evaluations (the curve seeds evaluate several times), over the single-process runs made with
one thread. Times are process-seconds: a DDP cell counts its wall time once per process.
Without runs, a timing probe measures them: a GN cell at two step counts evaluated on one image
(the slope is the time per image), and once more on the whole val split (the evaluation).
Pretraining takes the recorded time of each backbone already pretrained, else the probe's time
per step.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import time
from pathlib import Path

import numpy as np

from detnorm.config import write_yaml
from detnorm.io import write_json_atomic
from reproduction.runner import (
    cell_config,
    cpu_model,
    finished,
    invoke,
    machine,
    processes,
    run_cell,
    run_dir,
    run_seconds,
)

__all__ = ["cmd_estimate", "measured_rates", "probe"]


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


def _images(cfg: dict) -> int:
    return cfg["max_steps"] * cfg["batch_size"] * processes(cfg)


def _process_seconds(study, cell, root: Path, rates: dict) -> list[float]:
    """Each seed's process-seconds for ``cell``. One process: the fitted line. Several (DDP):
    a finished seed's wall time, else the mean of the finished seeds', times the process count
    (their all-reduce over gloo is not on the line); with none finished, the line for each
    process's share of the images, times the count, a lower bound."""
    out, measured = {}, {}
    n = processes(cell_config(study, cell))
    for s in study.seeds:
        cfg = cell_config(study, cell, s)
        out[s] = n * (rates["overhead_seconds"] + _images(cfg) / n * rates["seconds_per_image"]
                      + (study.curve_evals(s, cell) - 1) * rates["extra_eval_seconds"])  # fmt: skip
        path = run_dir(root, cell, s) / "study.json"
        if n > 1 and path.is_file() and finished(study, cell, s, root) is not None:
            rec = json.loads(path.read_text())
            if rec.get("status") == "done":
                measured[s] = n * run_seconds(rec)
    if measured:
        mean = sum(measured.values()) / len(measured)
        out = {s: measured.get(s, mean) for s in study.seeds}
    return [out[s] for s in study.seeds]


def _nonnegative_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0: a column whose coefficient comes out negative
    (runs on two CPUs of different speed can pull the per-evaluation time below zero) is fixed
    at 0 and the rest refitted."""
    keep = list(range(x.shape[1]))
    while True:
        coef = np.linalg.lstsq(x[:, keep], y, rcond=None)[0]
        if (coef >= 0).all() or len(keep) == 1:
            out = np.zeros(x.shape[1])
            out[keep] = np.maximum(coef, 0.0)
            return out
        keep.pop(int(np.argmin(coef)))


def measured_rates(study, root: Path) -> dict | None:
    """Seconds per training image, per extra evaluation and per run (start-up and the final
    evaluation) fitted to the finished single-thread runs, none of them negative; None with
    fewer than three. When three or more of the runs record this machine's CPU model
    (``machine.cpu_model``), only those are fitted."""
    rows, seconds, models = [], [], []
    for cell in study.runnable(with_optional=True):
        for seed in study.seeds:
            path = run_dir(root, cell, seed) / "study.json"
            if not path.is_file():
                continue
            rec = json.loads(path.read_text())
            if (
                rec.get("status") != "done"
                or (rec.get("machine") or {}).get("omp_num_threads") != "1"
            ):
                continue
            cfg = cell_config(study, cell, seed)
            if processes(cfg) > 1:  # DDP: all-reduce time the single-process line has not
                continue
            rows.append([1.0, _images(cfg), study.curve_evals(seed, cell) - 1])
            seconds.append(run_seconds(rec))
            models.append((rec.get("machine") or {}).get("cpu_model"))
    here = cpu_model()
    same = [i for i, m in enumerate(models) if here is not None and m == here]
    if len(same) >= 3:
        rows, seconds = [rows[i] for i in same], [seconds[i] for i in same]
    if len(rows) < 3:
        return None
    source = f"{len(rows)} finished runs (one thread each)" + (
        f" on {here}" if len(same) >= 3 else ""
    )
    x = np.array(rows, dtype=float)
    if not x[:, 2].any():
        x = x[:, :2]
    coef = _nonnegative_fit(x, np.array(seconds))
    return {"source": source,
            "overhead_seconds": float(coef[0]), "seconds_per_image": float(coef[1]),
            "extra_eval_seconds": float(coef[2]) if len(coef) > 2 else 0.0,
            "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip


def _pretrain_seconds(study, root: Path, rates: dict) -> dict[str, float | None]:
    """Each backbone's pretraining seconds: recorded when it exists, else its steps at the
    probe's time per step or, without a probe, at the recorded backbones' mean (None: unknown)."""
    done, todo = {}, {}
    for name, extra in study.pretrain.get("backbones", {}).items():
        meta = Path(root) / "pretrain" / name / "backbone.pth.json"
        if meta.is_file():
            m = json.loads(meta.read_text())
            done[name] = (float(m.get("train_seconds", 0.0)), int(m.get("steps") or 0))
            continue
        args = [str(a) for a in (*study.pretrain.get("args", []), *extra)]
        at = len(args) - 1 - args[::-1].index("--max-steps") if "--max-steps" in args else None
        todo[name] = int(args[at + 1]) if at is not None else 1000
    per_step = rates.get("pretrain_seconds_per_step")
    if per_step is None and any(steps for _, steps in done.values()):
        per_step = sum(s for s, _ in done.values()) / sum(n for _, n in done.values())
    out: dict[str, float | None] = {name: secs for name, (secs, _) in done.items()}
    out.update({name: steps * per_step if per_step else None for name, steps in todo.items()})
    return out


def cmd_estimate(study, args) -> int:
    path = args.root / "estimate.json"
    rates = None
    if args.no_probe and path.is_file():
        rates = json.loads(path.read_text())["rates"]
    elif not args.probe:
        rates = measured_rates(study, args.root)
    if rates is None:
        rates = probe(study, args.root, tuple(args.probe_steps), args.data)
        rates["source"] = "timing probe"
        rates["extra_eval_seconds"] = rates["eval_seconds"]
    rows = []
    for cell in study.runnable(with_optional=True):
        cfg = cell_config(study, cell)
        runs = _process_seconds(study, cell, args.root, rates)
        left = [t for s, t in zip(study.seeds, runs, strict=True)
                if finished(study, cell, s, args.root) is None]  # fmt: skip
        rows.append({"cell": cell.id, "steps": cfg["max_steps"], "images": _images(cfg),
                     "seconds_per_run": round(sum(runs) / len(runs), 1), "runs": len(runs),
                     "seconds": round(sum(runs), 1), "optional": cell.optional,
                     "runs_left": len(left), "seconds_left": round(sum(left), 1)})  # fmt: skip
    pre = _pretrain_seconds(study, args.root, rates)
    by_cell = {r["cell"]: r for r in rows}
    stages, seen, pretrained = {}, set(), set()
    for k in sorted(study.stages):  # a cell or backbone counts in the first stage that needs it
        cells = [c.id for c in study.stage_cells(k) if c.id not in seen]
        names = {study.cell(c).pretrain for c in cells} - {None} - pretrained
        seen.update(cells)
        pretrained.update(names)
        own = sum(by_cell[c]["seconds"] for c in cells if not by_cell[c]["optional"])
        stages[k] = round((own + sum(pre[n] or 0.0 for n in names)) / args.jobs)
    known = sum(v for v in pre.values() if v is not None)
    total = (sum(r["seconds"] for r in rows if not r["optional"]) + known) / args.jobs
    # what is left: runs without a finished metrics.json, and the backbones they need whose
    # weights are missing (restored backbones keep their record, not their weights)
    todo = [r for r in rows if r["runs_left"]]
    need = {study.cell(r["cell"]).pretrain for r in todo} - {None}
    need = {n for n in need if not (Path(args.root) / "pretrain" / n / "backbone.pth").is_file()}
    left = (sum(r["seconds_left"] for r in todo) + sum(pre.get(n) or 0.0 for n in need)) / args.jobs
    write_json_atomic(path, {"rates": rates, "cells": rows, "pretrain_seconds": pre,
                             "stages": stages, "jobs": args.jobs, "total_seconds": round(total),
                             "left_seconds": round(left)}, indent=1)  # fmt: skip
    print(f"rates from {rates['source']}: {rates['seconds_per_image']:.3f} s per training image, "
          f"{rates['overhead_seconds']:.0f} s per run, {rates['extra_eval_seconds']:.0f} s per "
          f"extra evaluation; machine {rates['machine']}")  # fmt: skip
    print(
        "| cell | steps | images | process-s per run | runs | left |\n|---|---:|---:|---:|---:|---:|"
    )
    for r in rows:
        opt = " (optional)" if r["optional"] else ""
        print(f"| {r['cell']}{opt} | {r['steps']} | {r['images']} | {r['seconds_per_run']:.0f} | "
              f"{r['runs']} | {r['runs_left']} |")  # fmt: skip
    for k, secs in stages.items():
        print(
            f"stage {k} ({', '.join(study.stages[k])}): {secs / 3600:.2f} h at {args.jobs} at a time"
        )
    unknown = [n for n, v in pre.items() if v is None]
    print(f"pretraining {known / 60:.0f} process-minutes"
          + (f" (not counted: {', '.join(unknown)}; `estimate --probe` times it)" if unknown else "")
          + f"; whole study (without optional cells) {total / 3600:.2f} h at {args.jobs} at a time; "
          f"wrote {path}")  # fmt: skip
    print(f"left to run, optional cells included: {sum(r['runs_left'] for r in todo)} runs"
          + (f" and pretraining {', '.join(sorted(need))}" if need else "")
          + f", {left / 3600:.2f} h at {args.jobs} at a time")  # fmt: skip
    return 0
