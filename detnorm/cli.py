"""``detnorm-train`` / ``tools/train.py``: train Mask R-CNN with a norm per component.

    detnorm-train --norm gn                          # embedded data, CPU-friendly defaults
    detnorm-train --config configs/coco/gn_4conv1fc_3x.yaml --data /data/coco --devices 8

Configs stack (``--config a.yaml --config b.yaml``, last wins) and flags win over configs; see
``detnorm.config`` for every key. Bad values exit with code 2 and one line naming the option.
The run directory (``--output-dir``, default ``runs/<name>``) receives ``config.yaml``,
``checkpoints/{last,best,step=N}.ckpt``, ``metrics.csv``, ``tb/``, ``metrics.json`` and
``results_{bbox,segm}.json``. ``--resume`` (``auto`` = the run's ``last.ckpt``) continues
with the checkpoint's weights, optimizer, LR schedule, loop position and sampler state.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from detnorm.config import ConfigError, build_config, write_yaml
from detnorm.norm import NORM_NAMES
from detnorm.schedule import SCHEDULES

PROG = "detnorm-train"

# flag -> (type, help); every flag maps to the config key with dashes as underscores
_FLAGS: dict[str, tuple] = {
    "--norm": (str, f"norm of every component: {', '.join(NORM_NAMES)}"),
    "--backbone-norm": (str, "norm of the ResNet body (overrides --norm)"),
    "--fpn-norm": (str, "norm of the FPN (overrides --norm)"),
    "--box-head-norm": (str, "norm of the RoI box head (overrides --norm)"),
    "--mask-head-norm": (str, "norm of the RoI mask head (overrides --norm)"),
    "--gn-groups": (int, "groups of gn / gn_ws (default 32)"),
    "--depth": (int, "ResNet depth: 18, 34, 50, 101"),
    "--box-head": (str, "2fc or 4conv1fc (default: 4conv1fc when the box head has a norm)"),
    "--schedule": (str, f"{'|'.join(SCHEDULES)}: 90k/180k/270k iterations at 16 images"),
    "--max-steps": (int, "shorten the run; warmup and LR steps keep their fractions"),
    "--base-lr": (float, "LR at 16 images per step (default 0.02; scaled linearly)"),
    "--batch-size": (int, "images per device"),
    "--accelerator": (str, "auto, cpu, gpu, cuda, mps"),
    "--devices": (int, "devices per node"),
    "--num-nodes": (int, "nodes"),
    "--precision": (str, "32-true, bf16-mixed, 16-mixed, ..."),
    "--pretrained": (str, "none, imagenet or a weights file"),
    "--trainable-backbone-layers": (int, "0-5 (default 3 when pretrained, else 5)"),
    "--data": (str, "dataset root (detnorm or COCO layout); default: the embedded dataset"),
    "--train-ann": (str, "training annotation json"),
    "--train-images": (str, "training image folder"),
    "--val-ann": (str, "validation annotation json"),
    "--val-images": (str, "validation image folder"),
    "--test-size": (int, "short side of evaluation images"),
    "--max-size": (int, "long-side cap (train and test)"),
    "--output-dir": (str, "run directory (default runs/<name>)"),
    "--name": (str, "run name"),
    "--seed": (int, "random seed"),
    "--num-workers": (int, "data-loader workers per device"),
    "--eval-period": (int, "evaluate every N steps (default: only at the end)"),
    "--checkpoint-period": (int, "write step=N.ckpt every N steps (default: --eval-period)"),
    "--precise-bn-iters": (int, "batches for PreciseBN (default 200)"),
    "--eval-backend": (str, "faster (default) or pycocotools"),
    "--log-every-n-steps": (int, "logging interval"),
}


class UsageError(Exception):
    """A bad command line; the message names the option."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump, no exit inside main()
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--config", action="append", default=[], metavar="YAML",
                   help="config file; repeat to stack (last wins)")  # fmt: skip
    for flag, (typ, help_) in _FLAGS.items():
        p.add_argument(flag, type=typ, help=help_)
    p.add_argument("--train-scales", type=int, nargs="+", help="training short sides (multi-scale)")
    p.add_argument("--resume", nargs="?", const="auto", metavar="CKPT|auto",
                   help="continue from a checkpoint; 'auto' (or no value): <run>/checkpoints/last.ckpt")  # fmt: skip
    p.add_argument("--deterministic", action="store_const", const=True,
                   help="deterministic algorithms (CPU runs are then bit-reproducible)")  # fmt: skip
    p.add_argument("--no-precise-bn", dest="precise_bn", action="store_const", const=False,
                   help="do not recompute BN statistics before evaluation")  # fmt: skip
    return p


def parse_config(argv: list[str] | None = None) -> dict:
    """Command line -> validated config dict (raises UsageError / ConfigError)."""
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "config"}
    return build_config(args.config, overrides)


def _resolve_resume(cfg: dict, out: Path) -> Path | None:
    if cfg["resume"] is None:
        return None
    if cfg["resume"] == "auto":
        last = out / "checkpoints" / "last.ckpt"
        return last if last.is_file() else None
    return Path(cfg["resume"])


def run_training(cfg: dict):
    """Train from a validated config; returns a ``detnorm.training.RunResult``."""
    import pytorch_lightning as pl

    from detnorm import training as T
    from detnorm.tables import format_metrics_table

    pl.seed_everything(cfg["seed"], workers=True, verbose=False)
    world = cfg["devices"] * cfg["num_nodes"]
    total_batch = cfg["batch_size"] * world
    out = Path(cfg["output_dir"] or Path("runs") / T.run_name(cfg))
    resume = _resolve_resume(cfg, out)
    dm = T.build_datamodule(cfg)
    module = T.build_module(T.module_kwargs(cfg, dm, total_batch))
    resume_step = None
    if resume is not None:
        resume_step = T.check_resume(resume, module)
    elif cfg["pretrained"] != "none":
        T.load_pretrained(module, cfg["pretrained"])
    module.output_dir = out
    spec = module.schedule
    resolved = dict(cfg)
    resolved.update({f"{c}_norm": n for c, n in module.norms.items()})
    resolved.update(
        output_dir=str(out), data=cfg["data"] or ("embedded" if cfg["train_ann"] is None else None),
        resume=str(resume) if resume else None, total_batch_size=total_batch, lr=spec.lr,
        max_steps=spec.max_steps, milestones=list(spec.milestones),
        warmup_steps=spec.warmup_iters, num_classes=dm.num_classes,
        box_head=T.box_head_name(module),
        trainable_backbone_layers=module.hparams.trainable_backbone_layers,
        input_format=module.hparams.input_format, stride_in_1x1=module.hparams.stride_in_1x1,
        train_ann=str(dm.paths["train_ann"]), val_ann=str(dm.paths["val_ann"]),
        train_images=str(dm.paths["train_images"]), val_images=str(dm.paths["val_images"]),
    )  # fmt: skip
    if T.rank() == 0:
        write_yaml(out / "config.yaml", resolved)
    T.say(f"# detnorm-train: {out}\n\n```yaml\n{yaml.safe_dump(resolved, sort_keys=False)}```\n")
    T.say(T.norm_table(module) + "\n")
    trainer = T.build_trainer(cfg, out, module, world=world, resume_step=resume_step)
    trainer.fit(
        module, datamodule=dm, ckpt_path=str(resume) if resume else None, weights_only=False
    )
    metrics = module.last_metrics
    if metrics is not None and trainer.is_global_zero:
        print(f"\nCOCO val (step {metrics.get('step')}):\n" + format_metrics_table(
            {t: metrics[t] for t in ("bbox", "segm") if t in metrics}))  # fmt: skip
        print(f"metrics: {out / 'metrics.json'}")
    return T.RunResult(trainer, module, out, metrics)


def evaluate(args: argparse.Namespace, extra: argparse.Namespace) -> int:
    """Body of :func:`evaluate_checkpoint` (after parsing)."""
    import pytorch_lightning as pl

    from detnorm import training as T
    from detnorm.module import DetnormModule
    from detnorm.tables import format_metrics_table, format_per_category_table

    ckpt = Path(args.checkpoint)
    if not ckpt.is_file():
        raise ConfigError(f"--checkpoint: file not found: {ckpt}")
    try:
        module = DetnormModule.load_from_checkpoint(ckpt, map_location="cpu")
    except Exception as e:  # noqa: BLE001
        raise ConfigError(
            f"--checkpoint {ckpt}: not a detnorm checkpoint ({T.one_line(e)})"
        ) from None
    if extra.test_size is not None:
        module.model.transform.min_size = (extra.test_size,)
    if args.backend:
        module.hparams.eval_backend = args.backend
    cfg = {"data": args.data, "batch_size": extra.batch_size or 1,
           "num_workers": extra.num_workers or 0, "max_size": module.model.transform.max_size}  # fmt: skip
    for key in ("train_ann", "train_images", "val_ann", "val_images"):
        cfg[key] = getattr(extra, key)
    if cfg["val_ann"] and not cfg["train_ann"] and not cfg["data"]:  # eval-only: train = val
        cfg["train_ann"], cfg["train_images"] = cfg["val_ann"], cfg["val_images"]
    dm = T.build_datamodule(cfg)
    if dm.num_classes != module.hparams.num_classes:
        raise ConfigError(f"--checkpoint {ckpt}: trained for {module.hparams.num_classes} "
                          f"classes, the data has {dm.num_classes}")  # fmt: skip
    out = Path(args.output_dir) if args.output_dir else ckpt.resolve().parent.parent / "eval"
    module.output_dir = out
    trainer = pl.Trainer(accelerator=extra.accelerator or "auto", devices=extra.devices or 1,
                         precision=extra.precision or "32-true", logger=False,
                         enable_checkpointing=False, enable_model_summary=False,
                         use_distributed_sampler=False)  # fmt: skip
    trainer.validate(module, datamodule=dm, verbose=False)
    metrics = module.last_metrics
    if trainer.is_global_zero:
        print(format_metrics_table({t: metrics[t] for t in ("bbox", "segm") if t in metrics}))
        if getattr(args, "per_category", False):
            print(
                format_per_category_table({t: metrics[t] for t in ("bbox", "segm") if t in metrics})
            )
        print(f"metrics: {out / 'metrics.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``detnorm-train`` and ``tools/train.py``; returns the exit code."""
    from detnorm.callbacks import NonFiniteLossError

    try:
        cfg = parse_config(argv)
        run = run_training(cfg)
    except (UsageError, ConfigError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"{PROG}: stopped: {e}", file=sys.stderr)
        return 1
    return 0 if run is not None else 1


def evaluate_checkpoint(args: argparse.Namespace) -> int:
    """``tools/eval.py --checkpoint CKPT [--data ...]``: evaluate a checkpoint on a val split.

    Reads from ``args``: ``checkpoint``, ``data``, ``output_dir`` (default: ``eval/`` next to
    the checkpoints folder's run), ``backend``, ``per_category`` and ``extra_args`` (this
    parser's ``--val-ann --val-images --train-ann --train-images --batch-size --num-workers
    --accelerator --devices --precision --test-size``).
    """
    p = _Parser(prog="tools/eval.py --checkpoint", allow_abbrev=False)
    for flag in ("--val-ann", "--val-images", "--train-ann", "--train-images", "--accelerator",
                 "--precision"):  # fmt: skip
        p.add_argument(flag)
    for flag in ("--batch-size", "--num-workers", "--devices", "--test-size"):
        p.add_argument(flag, type=int)
    try:
        extra = p.parse_args(getattr(args, "extra_args", []) or [])
        return evaluate(args, extra)
    except (UsageError, ConfigError) as e:
        print(f"tools/eval.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # python -m detnorm.cli (also how DDP re-launches itself)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
