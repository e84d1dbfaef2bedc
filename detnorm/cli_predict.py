"""``tools/predict.py --checkpoint CKPT IMAGE_OR_DIR... --output-dir DIR``: draw predictions.

Loads a ``DetnormModule`` checkpoint written by ``tools/train.py``, runs its Mask R-CNN in eval
mode on each image at its original size (the model resizes to its test size internally and maps
the outputs back), and writes one PNG per input with masks, boxes and "class score" labels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from detnorm.visualize import collect_images, predict_files


def category_names_from_hparams(hparams) -> list[str] | None:
    """Category names in label order (label 1 first) from a module's hparams, if stored.

    Accepts ``category_names`` (list of str) or ``categories`` (list of str or of COCO
    category dicts with a ``name``).
    """
    names = hparams.get("category_names") or hparams.get("categories")
    if not names:
        return None
    return [n["name"] if isinstance(n, dict) else str(n) for n in names]


def load_checkpoint_model(checkpoint: str | Path, device: str = "cpu"):
    """``(model, category_names)`` from a DetnormModule checkpoint; ``ValueError`` names the file."""
    path = Path(checkpoint)
    if not path.is_file():
        raise ValueError(f"--checkpoint: file not found: {path}")
    from detnorm.module import DetnormModule

    try:
        module = DetnormModule.load_from_checkpoint(path, map_location=device)
    except (KeyError, RuntimeError, TypeError, EOFError, OSError) as e:
        raise ValueError(f"--checkpoint: cannot load {path} as a detnorm checkpoint: {e}") from None
    return module.model.to(device).eval(), category_names_from_hparams(module.hparams)


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
        prog="predict.py", description="Draw Mask R-CNN predictions of a detnorm checkpoint to PNG."
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or directories"
    )
    parser.add_argument(
        "--checkpoint", required=True, metavar="CKPT", help="a tools/train.py checkpoint"
    )
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="where the PNGs go")
    parser.add_argument(
        "--score-threshold",
        type=parse_score,
        default=0.5,
        help="draw detections with at least this score (0-1, default 0.5)",
    )
    parser.add_argument(
        "--device", type=parse_device, default="cpu", help="cpu (default), cuda, cuda:N"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        collect_images(args.inputs, args.output_dir)  # bad inputs fail before the slow model load
        model, names = load_checkpoint_model(args.checkpoint, args.device)
        predict_files(
            model,
            args.inputs,
            args.output_dir,
            names,
            score_threshold=args.score_threshold,
            device=args.device,
        )
    except (ValueError, OSError) as e:
        print(f"predict.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
