"""``tools/compare.py RUN_DIR... [--output DIR] [--metric segm/AP]``: compare training runs.

Prints a markdown table of the runs (norm per component, pretrained or scratch, schedule, steps,
total batch, box and mask AP) and writes it as ``compare.md`` next to two plots, ``ap.png`` (AP
against step) and ``loss.png`` (loss curves), in the output directory.
"""

from __future__ import annotations

import argparse
import sys

from detnorm.compare import compare_runs, parse_metric


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
