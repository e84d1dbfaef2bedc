"""``tools/predict.py --checkpoint CKPT (IMAGE_OR_DIR... | --ann GT.json) --output-dir DIR``.

Loads a ``DetnormModule`` checkpoint written by ``tools/train.py`` into a
:class:`detnorm.Predictor`, runs it on each image at its original size (the model resizes to its
test size internally and maps the outputs back), and writes COCO results
(``predictions_bbox.json``, ``predictions_segm.json``, ``images.json``; see
:mod:`detnorm.inference.batch_predict`) that ``tools/eval.py --ann GT --results`` scores. ``--vis`` also
writes one PNG per input with masks, boxes and "class score" labels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from detnorm.inference import batch_predict as predict_run

AUTOCAST = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def load_predictor(args: argparse.Namespace):
    """The :class:`detnorm.Predictor` of ``--checkpoint``; ``ValueError`` names the option."""
    from detnorm.inference.predictor import Predictor

    path = Path(args.checkpoint)
    if not path.is_file():
        raise ValueError(f"--checkpoint: file not found: {path}")
    try:
        return Predictor.from_checkpoint(
            path, device=args.device, score_threshold=args.score_threshold,
            precision=args.precision, batch_size=args.batch_size,
            trust=getattr(args, "trust_weights", False),
        )  # fmt: skip
    except ValueError as e:
        raise ValueError(f"--checkpoint: {e}") from None


def parse_device(text: str) -> str:
    """Validate ``--device`` (``cpu``, ``cuda``, ``cuda:N``, ``mps``) against this machine."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a device (e.g. cpu, cuda, cuda:1)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(
            f"{text!r}: only {torch.cuda.device_count()} CUDA device(s)"
        )
    return text


def parse_score(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number in [0, 1]")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predict.py",
        description="Mask R-CNN predictions of a detnorm checkpoint as COCO results (and PNGs).",
    )
    parser.add_argument(
        "inputs", nargs="*", metavar="IMAGE_OR_DIR", help="image files or directories"
    )
    parser.add_argument("--ann", metavar="GT.json",
                        help="predict the images of this COCO file, with its image ids")  # fmt: skip
    parser.add_argument("--images", metavar="DIR",
                        help="folder of --ann's file_name entries (default: ROOT/images for "
                        "ROOT/annotations/X.json, ROOT/val2017 for COCO's)")  # fmt: skip
    parser.add_argument("--vis", action="store_true", help="also draw each image to a PNG")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N",
                        help="images per forward pass (same-size images only; default 4)")  # fmt: skip
    parser.add_argument(
        "--checkpoint", required=True, metavar="CKPT", help="a tools/train.py checkpoint"
    )
    parser.add_argument("--output-dir", required=True, metavar="DIR",
                        help="where the JSON files (and PNGs) go")  # fmt: skip
    parser.add_argument(
        "--score-threshold",
        type=parse_score,
        default=0.5,
        help="keep detections with at least this score (0-1, default 0.5; 0 for COCO AP)",
    )
    parser.add_argument(
        "--device", type=parse_device, default="cpu", help="cpu (default), cuda, cuda:N"
    )
    parser.add_argument(
        "--min-side", type=int, default=512, metavar="PX",
        help="upscale smaller images by an integer factor to this short side before drawing, "
        "so labels stay readable (default 512; 0: original size)",
    )  # fmt: skip
    parser.add_argument(
        "--precision", choices=tuple(AUTOCAST), default="32-true",
        help="32-true (default) or bf16-mixed / 16-mixed (autocast)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.inputs) == bool(args.ann):
        parser.error("give image files/folders or --ann GT.json (one of the two)")
    if args.images and not args.ann:
        parser.error("--images: only used with --ann")
    if args.batch_size < 1:
        parser.error(f"--batch-size: must be an integer >= 1, got {args.batch_size}")
    try:
        # bad inputs fail before the slow model load
        if args.ann:
            items = predict_run.items_from_ann(args.ann, args.images, args.output_dir)
        else:
            items = predict_run.items_from_inputs(args.inputs, args.output_dir)
        predictor = load_predictor(args)
        predict_run.run_predictions(
            predictor, items, args.output_dir, vis=args.vis, min_side=max(0, args.min_side)
        )
    except (ValueError, OSError) as e:
        print(f"predict.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
