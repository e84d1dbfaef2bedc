"""``detnorm-export`` / ``tools/export.py``: a checkpoint as TorchScript or ONNX.

    tools/export.py --checkpoint runs/gn/checkpoints/best.ckpt --format onnx --output gn.onnx

The file is written atomically, then run once on a generated image of ``--image-size`` next to
the eager model, and the largest box and score differences are printed (``--no-check`` skips
this). See :mod:`detnorm.inference.export` for what each format takes and returns. A case an exporter
cannot handle stops with one line naming the format and the reason, exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from detnorm.cli.parser import Parser, UsageError
from detnorm.inference.export import EXPORT_FORMATS, ExportError, export_model, run_onnx

PROG = "detnorm-export"
CHECK_TOLERANCE = 1e-3  # pixels for boxes, absolute for scores


def build_parser() -> Parser:
    p = Parser(prog=PROG, description="Export a detnorm checkpoint to TorchScript or ONNX.")
    p.add_argument("--checkpoint", required=True, type=Path, metavar="CKPT",
                   help="a tools/train.py checkpoint")  # fmt: skip
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS, dest="fmt",
                   help="torchscript (list of images in) or onnx (one image in)")  # fmt: skip
    p.add_argument("--output", required=True, type=Path, metavar="FILE", help="file to write")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                   help="example image for ONNX tracing and the check (default: the test size, "
                   "square); exported models take any size")  # fmt: skip
    p.add_argument("--trust-weights", action="store_true",
                   help="load a checkpoint whose pickle holds more than tensors (it can run code)")  # fmt: skip
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="do not run the exported file against the eager model")  # fmt: skip
    return p


def check_export(model: torch.nn.Module, path: Path, fmt: str, image: torch.Tensor) -> str:
    """Run ``path`` and the eager ``model`` on ``image``; one line with the differences.

    ``ExportError`` when the detections differ by more than :data:`CHECK_TOLERANCE`.
    """
    with torch.no_grad():
        eager = model.eval()([image])[0]
        if fmt == "torchscript":
            got = torch.jit.load(str(path))([image])[0]
        else:
            got = run_onnx(path, image)
    n, m = len(eager["scores"]), len(got["scores"])
    if n != m:
        raise ExportError(f"{fmt}: the exported model found {m} detections, eager found {n}")
    if n == 0:
        return f"checked: 0 detections from both on a {tuple(image.shape[1:])} image"
    box = float((eager["boxes"] - got["boxes"]).abs().max())
    score = float((eager["scores"] - got["scores"]).abs().max())
    if max(box, score) > CHECK_TOLERANCE or not torch.equal(eager["labels"], got["labels"].long()):
        raise ExportError(f"{fmt}: exported outputs differ from eager (boxes by up to {box:.2g} "
                          f"px, scores by {score:.2g})")  # fmt: skip
    return (f"checked against eager on a {tuple(image.shape[1:])} image: {n} detections, boxes "
            f"within {box:.1e} px, scores within {score:.1e}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``detnorm-export`` and ``tools/export.py``; returns the exit code."""
    from detnorm.engine.checkpoint_io import load_detnorm_module

    try:
        args = build_parser().parse_args(argv)
        if args.image_size is not None and min(args.image_size) < 1:
            raise UsageError(f"--image-size: must be two positive integers, got {args.image_size}")
        if not args.checkpoint.is_file():
            raise UsageError(f"--checkpoint: file not found: {args.checkpoint}")
        try:
            model = load_detnorm_module(args.checkpoint, trust=args.trust_weights).model
        except ValueError as e:
            raise UsageError(f"--checkpoint: {e}") from None
        test_size = int(model.transform.min_size[-1])
        size = tuple(args.image_size or (test_size, test_size))
        path = export_model(model, args.output, args.fmt, image_size=size)
        print(f"wrote {path} ({args.fmt}, {path.stat().st_size / 2**20:.1f} MiB)")
        if args.check:
            image = torch.rand(3, *size, generator=torch.Generator().manual_seed(0))
            print(check_export(model, path, args.fmt, image))
    except ExportError as e:
        print(f"{PROG}: cannot export: {e}", file=sys.stderr)
        return 2
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
