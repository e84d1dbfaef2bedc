"""The pieces ``detnorm.cli.train.run_training`` assembles from a validated config dict.

Data module, module (model + recipe), pretrained weights, the resume-checkpoint check, the
norm table and the Trainer (callbacks, loggers, atomic checkpoint I/O). Errors in values the user chose are raised as
``ConfigError`` (one line naming the option); ``detnorm.cli.train`` turns them into exit code 2.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl

from detnorm.config import ConfigError
from detnorm.engine.callbacks import (
    AtomicCheckpointIO,
    EvalAtEnd,
    RunCheckpoints,
    StepSeed,
    UndecodableReport,
)
from detnorm.engine.loggers import build_loggers
from detnorm.engine.module import DetnormModule
from detnorm.engine.precise_bn import PreciseBN
from detnorm.engine.prediction_grid import PredictionGrid
from detnorm.engine.signals import GracefulStop
from detnorm.engine.trainer_options import early_stopping
from detnorm.layers.norm import describe_norm, uses_batch_stats
from detnorm.modeling.maskrcnn import resolve_norms

__all__ = [
    "RunResult",
    "box_head_name",
    "build_datamodule",
    "build_module",
    "build_trainer",
    "check_resume",
    "load_pretrained",
    "module_kwargs",
    "norm_table",
]

# hparams that must agree between a checkpoint and the config for --resume
_ARCH_KEYS = ("num_classes", "depth", "gn_groups", "box_head", "trainable_backbone_layers",
              "norm", "backbone_norm", "fpn_norm", "box_head_norm", "mask_head_norm")  # fmt: skip


@dataclass
class RunResult:
    trainer: pl.Trainer
    module: DetnormModule
    output_dir: Path
    metrics: dict | None


def rank() -> int:
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(key):
            return int(os.environ[key])
    return 0


def say(*args) -> None:
    if rank() == 0:
        print(*args, flush=True)


def build_datamodule(cfg: dict, **kw):
    from detnorm.data.datamodule import DetectionDataModule
    from detnorm.data.image_check import BadImagesError

    dm = DetectionDataModule(
        cfg.get("data"),
        train_ann=cfg.get("train_ann"),
        train_images=cfg.get("train_images"),
        val_ann=cfg.get("val_ann"),
        val_images=cfg.get("val_images"),
        batch_size=cfg.get("batch_size", 2),
        num_workers=cfg.get("num_workers", 0),
        train_scales=tuple(cfg.get("train_scales", (800,))),
        max_size=cfg.get("max_size", 1333),
        scale_jitter=cfg.get("scale_jitter"),
        color_jitter=cfg.get("color_jitter"),
        seed=cfg.get("seed", 0),
        keep_empty=bool(cfg.get("keep_empty", False)),
        accumulate_grad_batches=cfg.get("accumulate_grad_batches", 1),
        skip_bad_images=bool(cfg.get("skip_bad_images", False)),
        **kw,
    )
    try:
        dm.setup("fit")
    except BadImagesError as e:  # one summary line, then one line per file
        raise ConfigError(f"--data: {e}") from None
    except (ValueError, OSError) as e:
        key, _, rest = str(e).partition(":")
        known = ("train_ann", "train_images", "val_ann", "val_images", "data")
        flag = "--" + key.replace("_", "-") if key in known else "--data"
        raise ConfigError(f"{flag}: {one_line(rest if key in known else e).strip()}") from None
    return dm


def one_line(e: BaseException) -> str:
    return re.sub(r"\s*\n\s*", "; ", str(e).strip())


def module_kwargs(cfg: dict, dm, total_batch_size: int) -> dict:
    pretrained = cfg["pretrained"] != "none"
    trainable = cfg["trainable_backbone_layers"]
    model_kwargs = {"min_size": cfg["test_size"], "max_size": cfg["max_size"]}
    model_kwargs.update(cfg["model_kwargs"])
    if cfg.get("max_detections") is not None:  # --max-detections wins over model_kwargs
        model_kwargs["box_detections_per_img"] = cfg["max_detections"]
    return dict(
        num_classes=dm.num_classes,
        label_to_cat_id={str(k): int(v) for k, v in dm.label_to_cat_id.items()},
        category_names=[c["name"] for c in dm.categories],
        norm=cfg["norm"],
        backbone_norm=cfg["backbone_norm"],
        fpn_norm=cfg["fpn_norm"],
        box_head_norm=cfg["box_head_norm"],
        mask_head_norm=cfg["mask_head_norm"],
        gn_groups=cfg["gn_groups"],
        depth=cfg["depth"],
        box_head=cfg["box_head"],
        trainable_backbone_layers=trainable if trainable is not None else (3 if pretrained else 5),
        input_format=cfg["input_format"] or "rgb",
        stride_in_1x1=bool(cfg["stride_in_1x1"]),
        model_kwargs=model_kwargs,
        schedule=cfg["schedule"],
        total_batch_size=total_batch_size,
        base_lr=float(cfg["base_lr"]),
        max_steps=cfg["max_steps"],
        warmup_iters=cfg["warmup_iters"],
        warmup_factor=float(cfg["warmup_factor"]),
        warmup_floor=bool(cfg["warmup_floor"]),
        weight_decay=float(cfg["weight_decay"]),
        norm_weight_decay=float(cfg["norm_weight_decay"]),
        momentum=float(cfg["momentum"]),
        eval_backend=cfg["eval_backend"],
        optimizer=cfg.get("optimizer", "sgd"),
        lr_schedule=cfg.get("lr_schedule", "step"),
    )


def build_module(kwargs: dict) -> DetnormModule:
    """``DetnormModule(**kwargs)`` with model-building errors mapped to the option at fault."""
    try:
        return DetnormModule(**kwargs)
    except ValueError as e:
        msg = one_line(e)
        if "divisible" in msg:
            raise ConfigError(f"--gn-groups {kwargs['gn_groups']}: {msg}") from None
        if "box_head" in msg:
            raise ConfigError(f"--box-head: {msg}") from None
        if "stride_in_1x1" in msg:
            raise ConfigError(f"stride_in_1x1: {msg}") from None
        raise ConfigError(f"model: {msg}") from None


def load_pretrained(
    module: DetnormModule, source: str, *, trust: bool = False, prefix: str | None = None
) -> None:
    """Load ``--pretrained`` weights; record the input format / stride they imply in hparams.

    ``trust`` (``--trust-weights``) lets a file that pickles more than tensors load; ``prefix``
    (``--pretrained-prefix``) picks the model's key prefix inside a wrapped file."""
    from detnorm.weights.load import load_weights
    from detnorm.weights.safe_load import DownloadError, UnsafeWeightsError

    try:
        report = load_weights(module.model, source, num_classes=module.hparams.num_classes + 1,
                              logger=say, trust=trust, prefix=prefix)  # fmt: skip
    except UnsafeWeightsError as e:
        raise ConfigError(f"--pretrained: {e}") from None
    except DownloadError as e:  # offline: names the URL and the cache path to put the file at
        raise ConfigError(f"--pretrained {source}: {one_line(e)}") from None
    except (ValueError, KeyError, RuntimeError, OSError) as e:
        raise ConfigError(
            f"--pretrained {source}: does not fit the config: {one_line(e)}"
        ) from None
    module.hparams.input_format = report.input_format
    module.hparams.stride_in_1x1 = bool(report.stride_in_1x1)


def check_resume(path: Path, module: DetnormModule, *, trust: bool = False) -> int:
    """Raise ConfigError when checkpoint ``path`` was made with another architecture; else
    return its global step. The file is read with ``weights_only=True`` unless ``trust``."""
    from detnorm.weights.safe_load import UnsafeWeightsError, torch_load

    try:
        ckpt = torch_load(path, trust=trust)
        saved, state = ckpt["hyper_parameters"], ckpt["state_dict"]
    except UnsafeWeightsError as e:
        raise ConfigError(f"--resume: {e}") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is a usage error here
        raise ConfigError(f"--resume {path}: not a detnorm checkpoint ({one_line(e)})") from None
    hp = dict(module.hparams)
    saved_norms = resolve_norms(*(saved.get(k) for k in
                                  ("norm", "backbone_norm", "fpn_norm", "box_head_norm", "mask_head_norm")))  # fmt: skip
    for comp, name in module.norms.items():
        if saved_norms[comp] != name:
            raise ConfigError(f"--resume {path}: checkpoint has {comp} norm {saved_norms[comp]!r}, "
                              f"the config asks for {name!r}; use the checkpoint's options or a new --output-dir")  # fmt: skip
    for key in _ARCH_KEYS:
        if key.endswith("norm"):
            continue
        if saved.get(key) != hp.get(key):
            raise ConfigError(f"--resume {path}: checkpoint has {key}={saved.get(key)!r}, "
                              f"the config asks for {hp.get(key)!r}")  # fmt: skip
    own = module.state_dict()
    for key, value in own.items():
        if key not in state or state[key].shape != value.shape:
            raise ConfigError(f"--resume {path}: parameter {key} is missing or has another shape")
    module.hparams.input_format = saved.get("input_format", hp["input_format"])
    module.hparams.stride_in_1x1 = saved.get("stride_in_1x1", hp["stride_in_1x1"])
    return int(ckpt.get("global_step", 0))


def box_head_name(module: DetnormModule) -> str:
    """The box head actually built: ``"2fc"`` or ``"4conv1fc"``."""
    from torchvision.models.detection.faster_rcnn import TwoMLPHead

    return "2fc" if isinstance(module.model.roi_heads.box_head, TwoMLPHead) else "4conv1fc"


def norm_table(module: DetnormModule) -> str:
    """Markdown table: component | norm | norm modules | trainable params."""
    from detnorm.layers.norm import is_norm_module

    m = module.model
    parts = {"backbone": m.backbone.body, "fpn": m.backbone.fpn,
             "box_head": m.roi_heads.box_head, "mask_head": m.roi_heads.mask_head}  # fmt: skip
    g = module.hparams.gn_groups
    lines = ["| component | norm | norm layers | trainable params |", "|---|---|---:|---:|"]
    for comp, sub in parts.items():
        layers = sum(is_norm_module(x) for x in sub.modules())
        params = sum(p.numel() for p in sub.parameters() if p.requires_grad)
        lines.append(
            f"| {comp} | {describe_norm(module.norms[comp], groups=g)} | {layers} | {params:,} |"
        )
    return "\n".join(lines)


def run_name(cfg: dict) -> str:
    if cfg["name"]:
        return cfg["name"]
    norms = resolve_norms(*(cfg[k] for k in ("norm", "backbone_norm", "fpn_norm", "box_head_norm",
                                             "mask_head_norm")))  # fmt: skip
    label = "-".join(dict.fromkeys(norms.values()))
    return f"r{cfg['depth']}_{label}_{cfg['schedule']}"


def build_trainer(
    cfg: dict, out: Path, module: DetnormModule, *, world: int, resume_step: int | None = None
) -> pl.Trainer:
    """The Trainer: DDP when ``world > 1``, our checkpoints/loggers, PreciseBN when needed.

    ``resume_step``: global step of the checkpoint being resumed (keeps metrics.csv rows).
    """
    spec = module.schedule
    accumulate = cfg.get("accumulate_grad_batches", 1)
    loggers = build_loggers(cfg.get("logger", ["tensorboard"]), out, run_name=Path(out).name,
                            keep_before_step=resume_step)  # fmt: skip
    callbacks = [StepSeed(cfg["seed"]), EvalAtEnd(),
                 RunCheckpoints(out / "checkpoints", cfg["checkpoint_period"] or cfg["eval_period"])]  # fmt: skip
    if cfg["precise_bn"] and any(uses_batch_stats(n) for n in module.norms.values()):
        callbacks.append(PreciseBN(cfg["precise_bn_iters"]))
    callbacks.append(PredictionGrid(out / "predictions.png"))  # after PreciseBN's statistics
    checkpoints = next(c for c in callbacks if isinstance(c, RunCheckpoints))
    callbacks.append(GracefulStop(checkpoints))  # SIGTERM/SIGINT: save last.ckpt, then stop
    callbacks.append(UndecodableReport())
    if cfg.get("early_stopping_patience"):
        callbacks.append(early_stopping(cfg["early_stopping_patience"]))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
        return pl.Trainer(
            accelerator=cfg["accelerator"],
            devices=cfg["devices"],
            num_nodes=cfg["num_nodes"],
            strategy="ddp" if world > 1 else "auto",
            precision=cfg["precision"],
            gradient_clip_val=cfg["clip_grad_norm"],
            gradient_clip_algorithm="norm" if cfg["clip_grad_norm"] else None,
            max_steps=spec.max_steps,
            max_epochs=-1,
            accumulate_grad_batches=accumulate,
            # counted in batches: `accumulate` batches make one optimizer step (a full one, as
            # the train sampler pads every epoch to whole steps)
            val_check_interval=min(cfg["eval_period"] or spec.max_steps, spec.max_steps)
            * accumulate,
            check_val_every_n_epoch=None,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
            deterministic=cfg["deterministic"],
            logger=loggers,
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_model_summary=False,
            log_every_n_steps=cfg["log_every_n_steps"],
            default_root_dir=out,
            plugins=[AtomicCheckpointIO(trust=cfg.get("trust_weights", False))],
        )
