"""Time to accuracy: box and mask AP against wall time for training runs, as a table and a PNG.

    # run the main job (and alternatives) one after another, then plot them
    python benchmarks/time_to_accuracy.py run --arm "main=" --arm "fp32=--precision 32-true"
    # plot finished runs (their TensorBoard events hold each evaluation's wall time)
    python benchmarks/time_to_accuracy.py plot runs/gn=main /tmp/other_run=alternative

Each arm of ``run`` is ``LABEL=EXTRA ARGS`` for ``tools/train.py`` (the main job when empty); the
arms run one at a time, so each has the machine to itself. The clock of a run starts when its
process starts (``run``) or, for ``plot``, at the run's ``config.yaml``, which is written after
setup and before the first step. The points are the run's evaluations (``--eval-period``). Results
go to ``benchmarks/time_to_accuracy.json`` and ``.png``; ``report.py`` renders the table into
``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import machine, write_result  # noqa: E402

TAGS = {"bbox": "val/bbox_AP", "segm": "val/segm_AP"}


def read_curve(run_dir: Path, start: float | None = None) -> dict:
    """``{"minutes": [...], "step": [...], "bbox": [...], "segm": [...]}`` from a run's TB events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(run_dir)
    if start is None:
        start = (run_dir / "config.yaml").stat().st_mtime
    points: dict[int, dict] = {}
    for events in sorted((run_dir / "tb").rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for iou_type, tag in TAGS.items():
            if tag not in acc.Tags().get("scalars", []):
                continue
            for ev in acc.Scalars(tag):
                p = points.setdefault(ev.step, {"wall": ev.wall_time})
                p[iou_type] = ev.value
                p["wall"] = max(p["wall"], ev.wall_time)
    steps = sorted(points)
    return {
        # Lightning logs the evaluation that follows optimizer step N at index N - 1
        "step": [s + 1 for s in steps],
        "minutes": [round((points[s]["wall"] - start) / 60, 3) for s in steps],
        "bbox": [points[s].get("bbox") for s in steps],
        "segm": [points[s].get("segm") for s in steps],
    }


def plot(curves: dict[str, dict], out_png: Path, title: str, steps_only=()) -> None:
    """Box and mask AP against wall time (runs timed on a quiet machine) and mask AP against
    steps (every run; ``steps_only`` runs were timed under load, so only their steps count)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    for ax, iou_type in zip(axes[:2], ("bbox", "segm"), strict=True):
        for label, c in curves.items():
            if label not in steps_only:
                ax.plot(c["minutes"], c[iou_type], marker="o", label=label)
        ax.set_title(f"{'box' if iou_type == 'bbox' else 'mask'} AP against wall time")
        ax.set_xlabel("minutes since the run started")
    for label, c in curves.items():
        axes[2].plot(c["step"], c["segm"], marker="o", label=label)
    axes[2].set_title("mask AP against optimizer steps (all runs)")
    axes[2].set_xlabel("step")
    for ax in axes:
        ax.axhline(25, color="grey", lw=0.8, ls="--")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("COCO AP (val)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def table(curves: dict[str, dict]) -> str:
    rows = [
        "| run | steps | minutes | box AP | mask AP | best mask AP |",
        "|---|---|---|---|---|---|",
    ]
    for label, c in curves.items():
        if not c["step"]:
            rows.append(f"| {label} | - | - | - | - | - |")
            continue
        best = max((v for v in c["segm"] if v is not None), default=float("nan"))
        rows.append(f"| {label} | {c['step'][-1]} | {c['minutes'][-1]:.1f} | "
                    f"{c['bbox'][-1]:.1f} | {c['segm'][-1]:.1f} | {best:.1f} |")  # fmt: skip
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train each arm, one at a time, then plot")
    r.add_argument("--arm", action="append", required=True, metavar="LABEL=ARGS")
    r.add_argument("--root", type=Path, default=Path("runs/time_to_accuracy"))
    pl = sub.add_parser("plot", help="plot finished runs: RUN_DIR[=LABEL] ...")
    pl.add_argument("runs", nargs="+")
    for q in (r, pl):
        q.add_argument("--json", type=Path, default=HERE / "time_to_accuracy.json")
        q.add_argument("--png", type=Path, default=HERE / "time_to_accuracy.png")
        q.add_argument("--note", default="", help="what the machine was doing, for the table")
        q.add_argument(
            "--steps-only",
            action="append",
            default=[],
            metavar="LABEL",
            help="a run timed under load: plotted against steps only",
        )
    args = p.parse_args(argv)
    curves: dict[str, dict] = {}
    commands: dict[str, str] = {}
    if args.cmd == "run":
        for arm in args.arm:
            label, _, extra = arm.partition("=")
            out = args.root / label
            cmd = [sys.executable, str(HERE.parent / "tools" / "train.py"), "--output-dir", str(out),
                   "--overwrite", *shlex.split(extra)]  # fmt: skip
            commands[label] = shlex.join(cmd[1:])
            print(f"== {label}: {commands[label]}", flush=True)
            start = time.time()
            subprocess.run(cmd, check=True)
            curves[label] = read_curve(out, start)
            curves[label]["total_minutes"] = round((time.time() - start) / 60, 2)
    else:
        for spec in args.runs:
            path, _, label = spec.partition("=")
            curves[label or Path(path).name] = read_curve(Path(path))
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
              "note": args.note, "commands": commands, "steps_only": args.steps_only,
              "curves": curves}  # fmt: skip
    write_result(args.json, result)
    plot(curves, args.png, args.note or "time to accuracy", args.steps_only)
    print(table(curves))
    print(f"wrote {args.json} and {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
