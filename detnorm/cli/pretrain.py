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
    p.add_argument(
        "--task",
        default="single",
        choices=["single", "cluttered"],
        help="--synthetic: one large shape (single) or the sweep's fill patterns in clutter",
    )
    p.add_argument("--data-seed", type=int, help="seed of the synthetic images (default --seed)")
    p.add_argument("--depth", type=int, default=18, choices=sorted(DEPTHS))
    p.add_argument(
        "--width", type=int, help="narrow small-image ResNet of this base width (not a backbone)"
    )
    p.add_argument(
        "--blocks", type=int, nargs="+", default=[1, 1, 1], help="--width: blocks per stage"
    )
    p.add_argument("--stem-stride", type=int, default=1, choices=[1, 2], help="--width: stem")
    p.add_argument("--norm", default="gn", choices=[n for n in NORM_NAMES if n != "none"])
    p.add_argument("--gn-groups", type=int, default=32, help="groups of gn / gn_ws")
    p.add_argument("--image-size", type=int, default=64, help="training crop side (px)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--epochs", type=float, help="run length in epochs (overrides --max-steps)")
    p.add_argument("--base-lr", type=float, default=0.1, help="LR at --lr-reference images")
    p.add_argument(
        "--lr-reference", type=int, default=256, help="LR = base-lr * batch / this (sweep: 32)"
    )
    p.add_argument("--warmup-fraction", type=float, help="warmup steps as a fraction of the run")
    p.add_argument(
        "--eval-every-epochs", type=float, help="val error every this many epochs (the curve)"
    )
    p.add_argument(
        "--precise-bn-iters", type=int, default=0, help="BN: also evaluate after PreciseBN"
    )
    p.add_argument("--precise-bn-batch", type=int, default=64, help="images per PreciseBN batch")
    p.add_argument("--no-weights", action="store_true", help="write pretrain.json, no weights")
    p.add_argument("--no-progress-bar", action="store_true")
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
    checks = {key: getattr(args, key) >= 1 for key in ("gn_groups", "image_size", "batch_size",
              "max_steps", "num_train", "num_val", "lr_reference", "precise_bn_batch")}  # fmt: skip
    checks["width"] = args.width is None or args.width >= 1
    checks["blocks"] = all(b >= 1 for b in args.blocks)
    checks["precise_bn_iters"] = args.precise_bn_iters >= 0
    for key in ("epochs", "eval_every_epochs"):
        checks[key] = getattr(args, key) is None or getattr(args, key) > 0
    checks["warmup_fraction"] = args.warmup_fraction is None or 0 <= args.warmup_fraction < 1
    for key, ok in checks.items():
        if not ok:
            rule = {"precise_bn_iters": ">= 0", "epochs": "> 0", "eval_every_epochs": "> 0",
                    "warmup_fraction": "in [0, 1)"}.get(key, ">= 1")  # fmt: skip
            print(f"pretrain_backbone.py: error: --{key.replace('_', '-')} must be {rule}",
                  file=sys.stderr)  # fmt: skip
            return 2
    try:
        meta = pretrain(args)
    except ValueError as e:
        print(f"pretrain_backbone.py: error: {e}", file=sys.stderr)
        return 2
    if not meta:  # ranks other than 0
        return 0
    precise = meta.get("top1_precise_bn")
    extra = "" if precise is None else f" ({precise:.2f}% with PreciseBN statistics)"
    print(f"top-1 {meta['top1']:.2f}%{extra} on val ({meta['data']}); "
          f"wrote {meta['weights'] or args.output_dir + '/pretrain.json'}")  # fmt: skip
    if meta["format"] == "torchvision_resnet" and meta["weights"]:
        print(
            f"load it with: tools/train.py --backbone-norm {args.norm} --pretrained {meta['weights']}"
        )
    return 0
