"""``detnorm-pretrain`` / ``tools/pretrain_backbone.py``: pretrain a ResNet body with any norm by
image classification (``detnorm.engine.pretrain``), for ``tools/train.py --pretrained``."""

from __future__ import annotations

import argparse
import sys

from detnorm.engine.pretrain import pretrain
from detnorm.layers.norm import NORM_NAMES
from detnorm.modeling.backbone import DEPTHS

__all__ = ["build_parser", "main"]

DESCRIPTION = "Pretrain a ResNet backbone with any norm by image classification."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pretrain_backbone.py", description=DESCRIPTION)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="DIR", help="ImageFolder root with train/ and val/")
    src.add_argument("--synthetic", action="store_true", help="single-shape images (6 classes)")
    p.add_argument(
        "--no-clutter",
        action="store_true",
        help="--synthetic without background clutter or textures (the study's data)",
    )
    p.add_argument("--depth", type=int, default=18, choices=sorted(DEPTHS))
    p.add_argument("--norm", default="gn", choices=[n for n in NORM_NAMES if n != "none"])
    p.add_argument("--gn-groups", type=int, default=32, help="groups of gn / gn_ws")
    p.add_argument("--image-size", type=int, default=64, help="training crop side (px)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--base-lr", type=float, default=0.1, help="LR at 256 images (scaled)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--num-train", type=int, default=20000, help="synthetic images per epoch")
    p.add_argument("--num-val", type=int, default=1200, help="synthetic validation images")
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--checkpoint-period", type=int, default=200, help="steps between last.ckpt")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--devices", type=int, default=1, help="> 1: DDP (e.g. GPUs on ImageNet)")
    p.add_argument("--precision", default="32-true", help="32-true, bf16-mixed, 16-mixed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    p.add_argument("--output-dir", required=True, help="gets backbone.pth (+ .json), metrics.csv")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for key in ("gn_groups", "image_size", "batch_size", "max_steps", "num_train", "num_val"):
        if getattr(args, key) < 1:
            print(f"pretrain_backbone.py: error: --{key.replace('_', '-')} must be >= 1",
                  file=sys.stderr)  # fmt: skip
            return 2
    try:
        meta = pretrain(args)
    except ValueError as e:
        print(f"pretrain_backbone.py: error: {e}", file=sys.stderr)
        return 2
    if meta:  # rank 0
        print(f"top-1 {meta['top1']:.2f}% on val ({meta['data']}); wrote {meta['weights']}")
        print(
            f"load it with: tools/train.py --backbone-norm {args.norm} --pretrained {meta['weights']}"
        )
    return 0
