"""``tools/eval.py``: COCO AP of an existing results file, or of a checkpoint.

Results mode::

    tools/eval.py --ann GT.json --results RESULTS.json [--iou-types bbox segm]
                  [--output-dir DIR] [--backend faster|pycocotools] [--per-category]
                  [--max-detections N]

scores a COCO results file (a JSON list of detections) from any model, prints the AP table and
writes ``metrics.json`` to ``--output-dir`` (default: the results file's directory). The iou
types default to bbox, plus segm when the results carry ``"segmentation"``.

Checkpoint mode (``--checkpoint CKPT [--data ...]``) is implemented by
``detnorm.cli.train.evaluate_checkpoint(args)``; options this parser does not know are passed to it
unparsed as ``args.extra_args``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detnorm.evaluation.coco_eval import (
    BACKENDS,
    DEFAULT_BACKEND,
    IOU_TYPES,
    check_results,
    evaluate_coco,
    load_gt_dataset,
)
from detnorm.evaluation.tables import format_metrics_table, format_per_category_table
from detnorm.io import read_json, write_json_atomic

PROG = "tools/eval.py"


class UsageError(Exception):
    """A bad command-line value; the message names the option and what it allows."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump, no sys.exit inside main()
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="COCO AP (bbox, segm) of an existing results file, or of a checkpoint.",
        allow_abbrev=False,
    )
    results = p.add_argument_group("results mode")
    results.add_argument("--ann", type=Path, metavar="GT.json", help="COCO ground-truth json")
    results.add_argument(
        "--results", type=Path, metavar="RESULTS.json", help="COCO results json (list)"
    )
    ckpt = p.add_argument_group("checkpoint mode")
    ckpt.add_argument("--checkpoint", type=Path, metavar="CKPT", help="model checkpoint to run")
    ckpt.add_argument("--data", help="dataset for --checkpoint (default: the embedded one)")
    p.add_argument(
        "--iou-types", nargs="+", choices=IOU_TYPES, help="default: bbox, and segm if available"
    )
    p.add_argument("--output-dir", type=Path, help="where metrics.json goes")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=DEFAULT_BACKEND,
        help="COCOeval engine (default: faster, i.e. faster-coco-eval; same stats as pycocotools)",
    )
    p.add_argument("--per-category", action="store_true", help="also print per-category AP")
    p.add_argument(
        "--max-detections",
        type=int,
        metavar="N",
        help="detections per image kept by COCOeval (its maxDets, default 100); with --checkpoint"
        " also the model's limit (default: the checkpoint's own)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tools/eval.py`` and the ``detnorm-eval`` script; returns the exit code."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if args.checkpoint is not None:
            for option in ("ann", "results"):
                if getattr(args, option) is not None:
                    raise UsageError(f"--{option}: not allowed with --checkpoint")
            if not args.checkpoint.exists():
                raise UsageError(f"--checkpoint: file not found: {args.checkpoint}")
            args.extra_args = extra
            try:
                from detnorm.cli.train import evaluate_checkpoint  # lazy: pulls in Lightning
            except ImportError as e:
                if e.name != "detnorm.cli.train":
                    raise
                raise UsageError("--checkpoint: not available in this install") from None
            return int(evaluate_checkpoint(args) or 0)
        if extra:
            raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
        if args.data is not None:
            raise UsageError("--data: only used with --checkpoint")
        return evaluate_results_file(args)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


def evaluate_results_file(args: argparse.Namespace) -> int:
    """Results mode: validate the inputs, evaluate, print tables, write metrics.json."""
    if args.results is None or args.ann is None:
        missing = "--results" if args.results is None else "--ann"
        raise UsageError(
            f"{missing}: required; give --ann GT.json --results RESULTS.json, or --checkpoint CKPT"
        )
    try:
        gt = read_json(args.ann, "--ann")
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        results = read_json(args.results, "--results")
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
            raise ValueError("must be a JSON list of detections (COCO results format)")
    except ValueError as e:
        raise UsageError(_prefixed("--results", args.results, e)) from None

    has_segm = any("segmentation" in r for r in results)
    iou_types = tuple(args.iou_types or (("bbox", "segm") if has_segm else ("bbox",)))
    if "segm" in iou_types and not has_segm and results:
        raise UsageError(f"--iou-types: segm needs 'segmentation' in {args.results}; it has none")
    try:
        gt = load_gt_dataset(gt, iou_types)
    except ValueError as e:
        raise UsageError(_prefixed("--ann", args.ann, e)) from None
    try:
        for iou_type in iou_types:
            check_results(gt, results, iou_type)
    except ValueError as e:
        raise UsageError(_prefixed("--results", args.results, e)) from None
    max_dets = 100 if args.max_detections is None else args.max_detections
    if max_dets < 10:
        raise UsageError(f"--max-detections: must be an integer >= 10, got {max_dets}")
    try:
        metrics = evaluate_coco(
            gt, results, iou_types=iou_types, backend=args.backend, max_dets=max_dets
        )
    except ValueError as e:  # e.g. faster-coco-eval not installed
        raise UsageError(f"--backend {args.backend}: {e}") from None

    print(format_metrics_table(metrics))
    if args.per_category:
        print()
        print(format_per_category_table(metrics))
    output_dir = args.output_dir if args.output_dir is not None else args.results.parent
    path = write_json_atomic(output_dir / "metrics.json", metrics, indent=2)
    print(f"\nwrote {path}")
    return 0


def _prefixed(option: str, path: Path, error: ValueError) -> str:
    """'--opt: message', naming the file unless the message already does."""
    message = str(error)
    if message.startswith(option):
        return message
    return f"{option} {path}: {message}"
