"""``detnorm-train`` / ``tools/train.py``: train Mask R-CNN with a norm per component.

    detnorm-train --norm gn                          # embedded data, CPU-friendly defaults
    detnorm-train --config configs/coco/gn_4conv1fc_3x.yaml --data /data/coco --devices 8

Configs stack (``--config a.yaml --config b.yaml``, last wins), flags win over configs and
``--set KEY=VALUE`` (``detnorm.config.overrides``) wins over flags; see ``detnorm.config`` for every key.
``--print-config`` prints the resolved config and exits. Bad values exit with code 2 and one
line naming the option.
The run directory (``--output-dir``, default ``runs/<name>``) receives ``config.yaml``,
``checkpoints/{last,best,step=N}.ckpt``, ``metrics.csv``, ``tb/``, ``metrics.json`` and
``results_{bbox,segm}.json``. ``--resume`` (``auto`` = the run's ``last.ckpt``) continues
with the checkpoint's weights, optimizer, LR schedule, loop position and sampler state.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

import yaml

from detnorm.config import ConfigError, build_config, write_yaml
from detnorm.engine.loggers import LOGGERS
from detnorm.layers.norm import NORM_NAMES
from detnorm.solver.optimizer import OPTIMIZERS
from detnorm.solver.schedule import LR_SCHEDULES, SCHEDULES

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
    "--max-detections": (
        int,
        "detections per image: the model's limit and COCOeval's maxDets "
        "(default: model_kwargs.box_detections_per_img, else 100)",
    ),
    "--schedule": (str, f"{'|'.join(SCHEDULES)}: 90k/180k/270k iterations at 16 images"),
    "--max-steps": (int, "shorten the run; LR steps keep their fractions, warmup a floor"),
    "--max-epochs": (
        int,
        "train N epochs instead of the schedule's iterations (LR steps keep "
        "their fractions; wins over --max-steps)",
    ),
    "--optimizer": (str, f"{'|'.join(OPTIMIZERS)} (default sgd; both: weight decay 0 on norms)"),
    "--lr-schedule": (str, f"{'|'.join(LR_SCHEDULES)} after warmup (default step: x0.1 twice)"),
    "--base-lr": (float, "LR at 16 images per step (default 0.02; scaled linearly)"),
    "--warmup-iters": (int, "warmup iterations at 16 images per step (default 1000; scaled)"),
    "--clip-grad-norm": (float, "clip the gradients' total L2 norm to this value (default: off)"),
    "--batch-size": (int, "images per device"),
    "--accumulate-grad-batches": (
        int,
        "batches per optimizer step; the LR and schedule follow devices x nodes x batch size x K",
    ),
    "--accelerator": (str, "auto, cpu, gpu, cuda, mps"),
    "--devices": (int, "devices per node"),
    "--num-nodes": (int, "nodes"),
    "--precision": (str, "32-true, bf16-mixed, 16-mixed, ..."),
    "--pretrained": (str, "none, imagenet, coco, coco_v2, an http(s) URL or a weights file"),
    "--pretrained-prefix": (str, "key prefix of the model in a wrapped --pretrained file"),
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
    "--early-stopping-patience": (int, "stop after N evaluations without a better val/score"),
    "--checkpoint-period": (int, "write step=N.ckpt every N steps (default: --eval-period)"),
    "--precise-bn-iters": (int, "batches for PreciseBN (default 200)"),
    "--eval-backend": (str, "faster (default) or pycocotools"),
    "--log-every-n-steps": (int, "logging interval"),
}


# on/off flags (default off) -> config key with dashes as underscores
_SWITCHES = {
    "--trust-weights": "load --pretrained/--resume files whose pickle holds more than tensors "
    "(it can run code: only for files from a trusted source)",
    "--skip-bad-images": "drop images that cannot be read (counted) instead of stopping",
    "--keep-empty": "train on images without annotations too (default: dropped)",
    "--force-resume": "resume even when the config differs from the run's config.yaml",
    "--overwrite": "replace the run already in --output-dir instead of refusing",
}


class _OnOrValues(argparse.Action):
    """``--flag`` alone stores True; ``--flag V1 V2 ...`` stores the list of values."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, list(values) if values else True)


_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS)


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
    p.add_argument("--scale-jitter", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="zoom each training resize by a random factor in [MIN, MAX], then crop "
                   "or pad back to its size (e.g. 0.5 2.0; default: off)")  # fmt: skip
    p.add_argument("--color-jitter", type=float, nargs="*", action=_OnOrValues,
                   metavar="B C S H", help="random brightness, contrast, saturation and hue "
                   "(default strengths without values: 0.3 0.3 0.3 0.05; default: off)")  # fmt: skip
    p.add_argument("--logger", nargs="+", metavar="NAME",
                   help=f"{'|'.join(LOGGERS)}, several allowed (default tensorboard; "
                   "metrics.csv is always written)")  # fmt: skip
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="set any config key, last wins over flags (model_kwargs.KEY=VALUE for "
                   "nested keys); repeatable")  # fmt: skip
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as YAML and exit")  # fmt: skip
    p.add_argument("--resume", nargs="?", const="auto", metavar="CKPT|auto",
                   help="continue from a checkpoint; 'auto' (or no value): <run>/checkpoints/last.ckpt")  # fmt: skip
    p.add_argument("--deterministic", action="store_const", const=True,
                   help="deterministic algorithms (CPU runs are then bit-reproducible)")  # fmt: skip
    p.add_argument("--no-precise-bn", dest="precise_bn", action="store_const", const=False,
                   help="do not recompute BN statistics before evaluation")  # fmt: skip
    for flag, help_ in _SWITCHES.items():
        p.add_argument(flag, action="store_const", const=True, help=help_)
    p.add_argument("--no-warmup-floor", dest="warmup_floor", action="store_const", const=False,
                   help="let --max-steps compress the warmup below its floor (min(1000, max(50, 10%%)))")  # fmt: skip
    return p


def parse_command_line(argv: list[str] | None = None) -> tuple[argparse.Namespace, dict]:
    """Command line -> (parsed args, validated config dict); raises UsageError / ConfigError."""
    from detnorm.config.overrides import parse_sets

    args = build_parser().parse_args(argv)
    cli_only = ("config", "sets", "print_config")
    overrides = {k: v for k, v in vars(args).items() if k not in cli_only}
    types = {flag[2:].replace("-", "_"): typ for flag, (typ, _) in _FLAGS.items()}
    sets = parse_sets(args.sets, types)
    return args, build_config(args.config, overrides, sets)


def parse_config(argv: list[str] | None = None) -> dict:
    """Command line -> validated config dict (raises UsageError / ConfigError)."""
    return parse_command_line(argv)[1]


def _resolve_resume(cfg: dict, out: Path) -> Path | None:
    if cfg["resume"] is None:
        return None
    if cfg["resume"] == "auto":
        last = out / "checkpoints" / "last.ckpt"
        return last if last.is_file() else None
    return Path(cfg["resume"])


def run_training(cfg: dict):
    """Train from a validated config; returns a ``detnorm.engine.builders.RunResult``."""
    import pytorch_lightning as pl

    from detnorm.data.image_check import unreadable_note
    from detnorm.engine import builders as T
    from detnorm.engine import run_dir as R
    from detnorm.engine import trainer_options as O
    from detnorm.engine.prediction_grid import PredictionGrid
    from detnorm.evaluation.tables import format_metrics_table, format_per_category_table

    pl.seed_everything(cfg["seed"], workers=True, verbose=False)
    world = cfg["devices"] * cfg["num_nodes"]
    total_batch = cfg["batch_size"] * world * cfg["accumulate_grad_batches"]  # per optimizer step
    out = R.choose_output_dir(cfg, Path("runs") / T.run_name(cfg))
    if T.rank() == 0:
        R.RunLock(out).acquire()  # released by main(), or when this process ends
        if cfg["overwrite"]:
            R.clear_run(out)
    resume = _resolve_resume(cfg, out)
    dm = T.build_datamodule(cfg)
    cfg = O.resolve_max_steps(cfg, dm, world)  # --max-epochs -> optimizer steps
    module = T.build_module(T.module_kwargs(cfg, dm, total_batch))
    resume_step = None
    if resume is not None:
        resume_step = T.check_resume(resume, module, trust=cfg["trust_weights"])
    elif cfg["pretrained"] != "none":
        T.load_pretrained(module, cfg["pretrained"], trust=cfg["trust_weights"],
                          prefix=cfg["pretrained_prefix"])  # fmt: skip
    module.output_dir = out
    limit = module.model.roi_heads.detections_per_img
    for warning in (O.dense_scene_warning(dm.val_coco, limit), O.optimizer_warning(cfg)):
        if warning and T.rank() == 0:
            print(f"{PROG}: {warning}", file=sys.stderr, flush=True)
    spec = module.schedule
    resolved = dict(cfg)
    resolved.update({f"{c}_norm": n for c, n in module.norms.items()})
    resolved.update(
        output_dir=str(out), data=cfg["data"] or ("embedded" if cfg["train_ann"] is None else None),
        resume=str(resume) if resume else None, total_batch_size=total_batch, lr=spec.lr,
        max_steps=spec.max_steps, milestones=list(spec.milestones),
        warmup_steps=spec.warmup_iters, num_classes=dm.num_classes, max_detections=limit,
        box_head=T.box_head_name(module),
        trainable_backbone_layers=module.hparams.trainable_backbone_layers,
        input_format=module.hparams.input_format, stride_in_1x1=module.hparams.stride_in_1x1,
        train_ann=str(dm.paths["train_ann"]), val_ann=str(dm.paths["val_ann"]),
        train_images=str(dm.paths["train_images"]), val_images=str(dm.paths["val_images"]),
    )  # fmt: skip
    if resume is not None:
        saved = resume.parent.parent / "config.yaml"
        saved = saved if saved.is_file() else out / "config.yaml"
        drift = R.check_config_drift(saved, resolved, force=cfg["force_resume"])
        if drift:
            T.say(f"--force-resume: resuming although the config differs in {', '.join(drift)}")
    if T.rank() == 0:
        write_yaml(out / "config.yaml", resolved)
    T.say(f"# detnorm-train: {out}\n\n```yaml\n{yaml.safe_dump(resolved, sort_keys=False)}```\n")
    T.say(T.norm_table(module) + "\n\n" + O.batch_note(cfg, module.norms) + "\n")
    trainer = T.build_trainer(cfg, out, module, world=world, resume_step=resume_step)
    trainer.fit(
        module, datamodule=dm, ckpt_path=str(resume) if resume else None,
        weights_only=not cfg["trust_weights"],
    )  # fmt: skip
    metrics = module.last_metrics
    if metrics is not None and trainer.is_global_zero:
        by_type = {t: metrics[t] for t in ("bbox", "segm") if t in metrics}
        print(f"\nCOCO val (step {metrics.get('step')}):\n" + format_metrics_table(by_type))
        print("\nper-category AP:\n" + format_per_category_table(by_type))
        if note := unreadable_note(metrics):
            print(note)
        print(f"metrics: {out / 'metrics.json'}")
    stopper = next(
        (c for c in trainer.callbacks if isinstance(c, pl.callbacks.EarlyStopping)), None
    )
    if stopper is not None and stopper.wait_count >= stopper.patience and trainer.is_global_zero:
        print(f"early stopping at step {trainer.global_step}: val/score did not improve over "
              f"{stopper.patience} evaluation(s) (best {float(stopper.best_score):.2f})")  # fmt: skip
    grid = next((c.written for c in trainer.callbacks if isinstance(c, PredictionGrid)), None)
    if grid is not None:
        print(f"predictions: {grid}")
    return T.RunResult(trainer, module, out, metrics)


def evaluate(args: argparse.Namespace, extra: argparse.Namespace) -> int:
    """Body of :func:`evaluate_checkpoint` (after parsing)."""
    import pytorch_lightning as pl

    from detnorm.data.image_check import unreadable_note
    from detnorm.engine import builders as T
    from detnorm.engine.trainer_options import dense_scene_warning
    from detnorm.evaluation.tables import format_metrics_table, format_per_category_table
    from detnorm.weights.safe_load import WeightsError, load_detnorm_module

    ckpt = Path(args.checkpoint)
    if not ckpt.is_file():
        raise ConfigError(f"--checkpoint: file not found: {ckpt}")
    try:
        module = load_detnorm_module(ckpt, trust=extra.trust_weights)
    except WeightsError as e:
        raise ConfigError(f"--checkpoint: {T.one_line(e)}") from None
    if extra.test_size is not None:
        module.model.transform.min_size = (extra.test_size,)
    if args.backend:
        module.hparams.eval_backend = args.backend
    max_dets = getattr(args, "max_detections", None)
    if max_dets is not None:
        if max_dets < 1:
            raise ConfigError(f"--max-detections: must be an integer >= 1, got {max_dets}")
        module.model.roi_heads.detections_per_img = max_dets  # evaluated at max(100, N)
    cfg = {"data": args.data, "batch_size": extra.batch_size or 1,
           "num_workers": extra.num_workers or 0, "max_size": module.model.transform.max_size,
           "skip_bad_images": extra.skip_bad_images}  # fmt: skip
    for key in ("train_ann", "train_images", "val_ann", "val_images"):
        cfg[key] = getattr(extra, key)
    if cfg["val_ann"] and not cfg["train_ann"] and not cfg["data"]:  # eval-only: train = val
        cfg["train_ann"], cfg["train_images"] = cfg["val_ann"], cfg["val_images"]
    dm = T.build_datamodule(cfg)
    if dm.num_classes != module.hparams.num_classes:
        raise ConfigError(f"--checkpoint {ckpt}: trained for {module.hparams.num_classes} "
                          f"classes, the data has {dm.num_classes}")  # fmt: skip
    warning = dense_scene_warning(dm.val_coco, module.model.roi_heads.detections_per_img)
    if warning:
        print(f"tools/eval.py: {warning}", file=sys.stderr)
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
        if note := unreadable_note(metrics):
            print(note)
        print(f"metrics: {out / 'metrics.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``detnorm-train`` and ``tools/train.py``; returns the exit code."""
    from detnorm.engine.callbacks import NonFiniteLossError
    from detnorm.engine.run_dir import RUN_DIR_ENV, release_locks
    from detnorm.engine.signals import RunInterrupted

    try:
        args, cfg = parse_command_line(argv)
        if args.print_config:  # the config as resolved from defaults, files, flags and --set
            print(yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None), end="")
            return 0
        run = run_training(cfg)
    except (UsageError, ConfigError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"\n{PROG}: stopped: {e}", file=sys.stderr)  # on a new line after the bar
        return 1
    except RunInterrupted as e:
        print(f"{PROG}: stopped by {e}; continue with the same options plus --resume auto "
              f"--output-dir {os.environ.get(RUN_DIR_ENV)}", file=sys.stderr)  # fmt: skip
        return 128 + e.signum
    except OSError as e:
        if e.errno not in _DISK_ERRORS:
            raise
        print(f"{PROG}: stopped: cannot write {e.filename}: {e.strerror}; the file it replaces "
              f"is intact; free space, then continue with --resume auto --output-dir "
              f"{os.environ.get(RUN_DIR_ENV)}", file=sys.stderr)  # fmt: skip
        return 1
    finally:
        release_locks()
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
    p.add_argument("--trust-weights", action="store_true")
    p.add_argument("--skip-bad-images", action="store_true")
    try:
        extra = p.parse_args(getattr(args, "extra_args", []) or [])
        return evaluate(args, extra)
    except (UsageError, ConfigError) as e:
        print(f"tools/eval.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # python -m detnorm.cli.train (also how DDP re-launches itself)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
