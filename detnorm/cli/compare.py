"""``tools/compare.py RUN_DIR... [--output DIR] [--metric segm/AP]``: compare training runs.

Prints a markdown table of the runs (norm per component, pretrained or scratch, schedule, steps,
total batch, box and mask AP) and writes it as ``compare.md`` next to two plots, ``ap.png`` (AP
against step) and ``loss.png`` (loss curves), in the output directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from detnorm.analysis.compare import build_table, load_runs, parse_metric
from detnorm.analysis.plots import plot_ap, plot_losses


def compare_runs(
    paths: Sequence[str | os.PathLike], output_dir: str | os.PathLike, metric: str = "segm/AP"
) -> tuple[str, list[Path]]:
    """Load the runs, write ``compare.md``, ``ap.png`` and ``loss.png``; return (table, files)."""
    parse_metric(metric)
    runs = load_runs(paths)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    table = build_table(runs, metric)
    md = output_dir / "compare.md"
    md.write_text(table, encoding="utf-8")
    stat = metric.split("/", 1)[1]
    files = [
        md,
        plot_ap(runs, output_dir / "ap.png", stat),
        plot_losses(runs, output_dir / "loss.png"),
    ]
    return table, files


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compare.py", description="Compare detnorm training runs: markdown table and plots."
    )
    parser.add_argument(
        "runs", nargs="+", metavar="RUN_DIR", help="run directories of tools/train.py"
    )
    parser.add_argument(
        "--output",
        default="runs/compare",
        metavar="DIR",
        help="where compare.md, ap.png and loss.png go (default: runs/compare)",
    )
    parser.add_argument(
        "--metric",
        default="segm/AP",
        help="'<bbox|segm>/<stat>' to sort the table by and to plot against step (default: segm/AP)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        parse_metric(args.metric)
        table, files = compare_runs(args.runs, args.output, args.metric)
    except (ValueError, OSError) as e:
        print(f"compare.py: error: {e}", file=sys.stderr)
        return 2
    print(table)
    for path in files:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
