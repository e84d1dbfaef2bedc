"""``tools/eval.py``: COCO AP of an existing results file, or of a checkpoint.

Results mode::

    tools/eval.py --ann GT.json --results RESULTS.json [--iou-types bbox segm]
                  [--output-dir DIR] [--backend faster|pycocotools] [--per-category]
                  [--max-detections N]

scores a COCO results file (a JSON list of detections) from any model, prints the AP table and
writes ``metrics.json`` to ``--output-dir`` (default: the results file's directory). The iou
types default to bbox, plus segm when the results carry ``"segmentation"``.

Checkpoint mode::

    tools/eval.py --checkpoint CKPT [--data ROOT | --val-ann A --val-images DIR] [--test-size N]
                  [--batch-size N] [--num-workers N] [--accelerator ...] [--devices N] ...

runs a checkpoint on a validation split (``detnorm.engine.run.evaluate_checkpoint``); its data
and hardware flags are the training options of the same name, made from the option schema.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detnorm.cli.parser import Parser, UsageError, add_option_flags, error_line, flag_label
from detnorm.config import validate
from detnorm.errors import ConfigError
from detnorm.evaluation import (
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


# training options that checkpoint mode takes, with the flags and checks of detnorm-train
CHECKPOINT_OPTIONS = ("data", "val_ann", "val_images", "train_ann", "train_images", "test_size",
                      "batch_size", "num_workers", "accelerator", "devices", "precision",
                      "trust_weights", "skip_bad_images")  # fmt: skip


def build_parser() -> Parser:
    p = Parser(
        prog=PROG,
        description="COCO AP (bbox, segm) of an existing results file, or of a checkpoint.",
    )
    results = p.add_argument_group("results mode")
    results.add_argument("--ann", type=Path, metavar="GT.json", help="COCO ground-truth json")
    results.add_argument(
        "--results", type=Path, metavar="RESULTS.json", help="COCO results json (list)"
    )
    ckpt = p.add_argument_group("checkpoint mode")
    ckpt.add_argument("--checkpoint", type=Path, metavar="CKPT", help="model checkpoint to run")
    add_option_flags(ckpt, CHECKPOINT_OPTIONS)
    p.add_argument(
        "--iou-types", nargs="+", choices=IOU_TYPES, help="default: bbox, and segm if available"
    )
    p.add_argument("--output-dir", type=Path, help="where metrics.json goes")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
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
    try:
        args = build_parser().parse_args(argv)
        if args.checkpoint is not None:
            for option in ("ann", "results", "iou_types"):
                if getattr(args, option) is not None:
                    raise UsageError(f"--{option.replace('_', '-')}: not allowed with --checkpoint")
            return evaluate_checkpoint(args)
        given = [k for k in CHECKPOINT_OPTIONS if getattr(args, k) is not None]
        if given:
            raise UsageError(f"{flag_label(given[0])}: only used with --checkpoint")
        return evaluate_results_file(args)
    except (UsageError, ConfigError) as e:
        print(error_line(PROG, e), file=sys.stderr)
        return 2


def evaluate_checkpoint(args: argparse.Namespace) -> int:
    """Checkpoint mode: run the checkpoint on the validation split, print the tables."""
    from detnorm.engine.run import evaluate_checkpoint as run  # lazy: pulls in Lightning

    if args.max_detections is not None and args.max_detections < 1:
        raise UsageError(f"--max-detections: must be an integer >= 1, got {args.max_detections}")
    given = {k: getattr(args, k) for k in CHECKPOINT_OPTIONS if getattr(args, k) is not None}
    validate(given)  # as training checks them
    data = {k: given.get(k) for k in CHECKPOINT_OPTIONS[:5]}
    data.update(batch_size=given.get("batch_size", 1), num_workers=given.get("num_workers", 0),
                skip_bad_images=bool(given.get("skip_bad_images")))  # fmt: skip
    hardware = {k: getattr(args, k) for k in ("accelerator", "devices", "precision")}
    module, out = run(
        args.checkpoint, data, trust=bool(args.trust_weights), test_size=args.test_size,
        backend=args.backend, max_detections=args.max_detections, output_dir=args.output_dir,
        trainer_kw={k: v for k, v in hardware.items() if v is not None},
        warn=lambda w: print(f"{PROG}: {w}", file=sys.stderr),
    )  # fmt: skip
    metrics = module.last_metrics
    if module.trainer.is_global_zero:
        from detnorm.data.image_check import unreadable_note

        by_type = {t: metrics[t] for t in ("bbox", "segm") if t in metrics}
        print(format_metrics_table(by_type))
        if args.per_category:
            print(format_per_category_table(by_type))
        if note := unreadable_note(metrics):
            print(note)
        print(f"metrics: {out / 'metrics.json'}")
    return 0


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
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise UsageError(f"--results {args.results}: must be a JSON list of detections "
                         "(COCO results format)")  # fmt: skip

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
        metrics = evaluate_coco(gt, results, iou_types=iou_types,
                                backend=args.backend or DEFAULT_BACKEND, max_dets=max_dets)  # fmt: skip
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
    """'--opt PATH: message'."""
    return f"{option} {path}: {error}"
