"""Training configuration: one flat dict, YAML files that stack, and validation.

A config is a plain ``dict`` whose keys are those of :data:`DEFAULTS` (the command-line flags
with dashes turned into underscores). Sources are applied in order, the last one winning:
``DEFAULTS`` < ``--config`` files in the order given < command-line flags.

A YAML file may name other files to load first with ``base: other.yaml`` (or a list), relative
to the file itself; that is how ``configs/`` scenarios state "the COCO base plus these deltas"
in one file. ``model_kwargs`` (extra torchvision ``MaskRCNN`` arguments) merges key by key;
every other key is replaced whole.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import yaml

from detnorm.io import atomic_write
from detnorm.layers.norm import NORM_NAMES
from detnorm.solver.optimizer import OPTIMIZERS
from detnorm.solver.schedule import LR_SCHEDULES, SCHEDULES

__all__ = [
    "DEFAULTS",
    "ConfigError",
    "build_config",
    "load_yaml",
    "option",
    "validate",
    "write_yaml",
]

DEFAULTS: dict[str, Any] = {
    # model: a norm per component (None = same as `norm`)
    "norm": "frozen_bn",
    "backbone_norm": None,
    "fpn_norm": None,
    "box_head_norm": None,
    "mask_head_norm": None,
    "gn_groups": 32,
    "depth": 50,
    "box_head": None,  # None: 4conv1fc if the box head has a norm, else 2fc
    "pretrained": "none",  # "none" | "imagenet" | "coco" | "coco_v2" | http(s) URL | path
    "pretrained_prefix": None,  # key prefix of the model inside a wrapped state_dict
    "trainable_backbone_layers": None,  # None: 3 when pretrained, 5 (all) from scratch
    "input_format": None,  # None: "rgb", or what the pretrained weights need
    "stride_in_1x1": None,  # None: False, or what caffe2 weights need
    "model_kwargs": {},  # extra torchvision MaskRCNN kwargs (rpn_*/box_* sampling, ...)
    "max_detections": None,  # detections per image (model and COCOeval); None: model_kwargs'
    # optimization (base_lr and warmup_iters at 16 images per step; scaled linearly)
    "schedule": "1x",
    "max_steps": None,
    "max_epochs": None,  # instead of the iteration schedule: milestones at the same fractions
    "optimizer": "sgd",  # sgd | adamw (both: weight decay 0 on norm parameters)
    "lr_schedule": "step",  # step | cosine (both after the warmup)
    "base_lr": 0.02,
    "warmup_iters": 1000,
    "warmup_factor": 0.001,
    "warmup_floor": True,  # --max-steps keeps >= detnorm.solver.schedule.warmup_floor_steps of warmup
    "weight_decay": 1e-4,
    "norm_weight_decay": 0.0,
    "momentum": 0.9,
    "clip_grad_norm": None,  # None: no clipping; else max total L2 norm of the gradients
    # hardware
    "batch_size": 2,  # images per device
    "accumulate_grad_batches": 1,  # effective batch: devices x nodes x batch_size x this
    "accelerator": "auto",
    "devices": 1,
    "num_nodes": 1,
    "precision": "32-true",
    # data (data=None and no explicit paths: the embedded synthetic dataset)
    "data": None,
    "train_ann": None,
    "train_images": None,
    "val_ann": None,
    "val_images": None,
    "train_scales": [800],
    "max_size": 1333,
    "test_size": 800,
    "num_workers": 2,
    "keep_empty": False,  # train on images without annotations too
    "scale_jitter": None,  # [min, max]: zoom the training resize by a factor, crop/pad back
    "color_jitter": None,  # true or [brightness, contrast, saturation, hue]; None/false: off
    # run
    "name": None,  # run name; output_dir defaults to runs/<name>
    "output_dir": None,
    "resume": None,  # None | "auto" | checkpoint path
    "force_resume": False,  # resume even when the config differs from the run's config.yaml
    "overwrite": False,  # replace a finished or unfinished run in output_dir
    "trust_weights": False,  # load weights/checkpoint files whose pickle needs other globals
    "skip_bad_images": False,  # drop unreadable images (counted) instead of stopping
    "seed": 0,
    "deterministic": False,
    "eval_period": None,  # steps between evaluations; None: only at the end
    "checkpoint_period": None,  # steps between step=N.ckpt files; None: eval_period
    "precise_bn": True,  # PreciseBN before each evaluation when bn/sync_bn is used
    "precise_bn_iters": 200,
    "log_every_n_steps": 20,
    "eval_backend": "faster",  # falls back to pycocotools if faster-coco-eval is missing
    "early_stopping_patience": None,  # stop after N evaluations without a better val/score
    "logger": ["tensorboard"],  # also csv, wandb, mlflow; metrics.csv is always written
}

# Under configs and flags when no dataset is named (neither in a config file nor on the command
# line): the embedded synthetic dataset (clean ~128 px scenes, detnorm.data.synthetic.DEFAULTS),
# so `detnorm-train --norm gn` trains a CPU-sized Mask R-CNN from scratch to a working detector
# in minutes instead of the COCO recipe: ResNet-18 with a 64-wide FPN and heads and 256-d box fcs
# (the 256-wide heads cost ~4x per image here), anchors 8-128 px for objects of 16-77 px,
# reduced RPN/RoI sampling for 2-5 objects per image, 4 images per step at LR 0.04 (base_lr 0.16
# at 16 images; the paper's 0.02 is tuned for 90k steps, not 1000), 1000 steps with the 1x
# decay points (steps 667 and 889) and the 10 % warmup floor, evaluation every 250 steps.
# README "Two commands" gives the measured time and AP; configs/cpu/base.yaml states the same.
EMBEDDED_PRESET: dict[str, Any] = {
    "depth": 18,
    "batch_size": 4,
    "base_lr": 0.16,
    "train_scales": [128],
    "max_size": 200,
    "test_size": 128,
    "max_steps": 1000,
    "eval_period": 250,
    "num_workers": 1,
    "precise_bn_iters": 20,
    "log_every_n_steps": 10,
    "model_kwargs": {
        "fpn_channels": 64,
        "box_fc_dim": 256,
        "anchor_sizes": [8, 16, 32, 64, 128],
        "rpn_batch_size_per_image": 64,
        "rpn_pre_nms_top_n_train": 600,
        "rpn_post_nms_top_n_train": 300,
        "rpn_pre_nms_top_n_test": 300,
        "rpn_post_nms_top_n_test": 100,
        "box_batch_size_per_image": 32,
        "box_detections_per_img": 50,
    },
}
DATA_KEYS = ("data", "train_ann", "train_images", "val_ann", "val_images")

PRECISIONS = ("32-true", "32", "64-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
NORM_KEYS = ("norm", "backbone_norm", "fpn_norm", "box_head_norm", "mask_head_norm")


class ConfigError(ValueError):
    """A bad config value. ``str(e)`` is one line naming the option and what is allowed."""


def option(key: str) -> str:
    """The command-line spelling of a config key: ``gn_groups`` -> ``--gn-groups``."""
    return "--" + key.replace("_", "-")


def load_yaml(path: str | os.PathLike, _seen: tuple = ()) -> dict:
    """Read a config file (and its ``base`` files first) into a merged dict of known keys."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ConfigError(f"--config {path}: 'base' files form a cycle")
    if not path.is_file():
        raise ConfigError(f"--config: file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: must be a mapping of option: value")
    bases = data.pop("base", None) or []
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = merge(merged, load_yaml(path.parent / base, (*_seen, path.resolve())))
    unknown = sorted(set(data) - set(DEFAULTS))
    if unknown:
        raise ConfigError(
            f"--config {path}: unknown key {unknown[0]!r}; allowed keys: base, {', '.join(DEFAULTS)}"
        )
    return merge(merged, data)


def merge(base: dict, override: dict) -> dict:
    """``override`` wins key by key; ``model_kwargs`` dicts merge one level deep."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key == "model_kwargs" and isinstance(value, dict):
            out[key] = {**out.get(key, {}), **value}
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_config(config_files=(), overrides: dict | None = None, sets: dict | None = None) -> dict:
    """DEFAULTS < [EMBEDDED_PRESET] < each config file in order < ``overrides`` < ``sets``.

    Entries of ``overrides`` (the flags) that are None are ignored; ``sets`` (``--set``, see
    ``detnorm.config.overrides``) may set None. :data:`EMBEDDED_PRESET` applies when no source names a
    dataset, i.e. when the run uses the embedded synthetic data.
    """
    files = [load_yaml(path) for path in config_files]
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    sets = sets or {}
    cfg = copy.deepcopy(DEFAULTS)
    if not any(src.get(k) is not None for src in (*files, flags, sets) for k in DATA_KEYS):
        cfg = merge(cfg, EMBEDDED_PRESET)
    for layer in files:
        cfg = merge(cfg, layer)
    cfg = merge(merge(cfg, flags), sets)
    validate(cfg)
    return cfg


def _int(cfg: dict, key: str, low: int, high: int | None = None, *, none_ok: bool = False) -> None:
    value = cfg[key]
    if value is None and none_ok:
        return
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value > high):
        allowed = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        raise ConfigError(f"{option(key)}: must be {allowed}, got {value!r}")


def _choice(cfg: dict, key: str, allowed, *, none_ok: bool = False) -> None:
    value = cfg[key]
    if (value is None and none_ok) or value in allowed:
        return
    raise ConfigError(f"{option(key)}: got {value!r}; allowed: {', '.join(map(str, allowed))}")


def _path(cfg: dict, key: str, kind: str) -> None:
    value = cfg[key]
    if value is None:
        return
    p = Path(str(value)).expanduser()
    if not (p.is_dir() if kind == "dir" else p.is_file()):
        what = "directory" if kind == "dir" else "file"
        raise ConfigError(f"{option(key)}: {what} not found: {value}")


def _loggers(cfg: dict) -> None:
    from detnorm.engine.loggers import LOGGERS, missing_package

    names = cfg["logger"]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"--logger: must be a list of {', '.join(LOGGERS)}, got {names!r}")
    for name in names:
        _choice({"logger": name}, "logger", tuple(LOGGERS))
        package = missing_package(name)
        if package and name != "tensorboard":  # tensorboard, the default, is skipped with a notice
            raise ConfigError(f"--logger {name}: the {package!r} package is not installed; "
                              f"install it (pip install {package}) or leave {name} out")  # fmt: skip


def _jitter(cfg: dict) -> None:
    """``scale_jitter``: None or [min, max] with 0 < min <= max; ``color_jitter``: None,
    true/false, or [brightness, contrast, saturation, hue], each >= 0 and hue <= 0.5."""
    value = cfg["scale_jitter"]
    nums = isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )
    if value is not None and not (nums and len(value) == 2 and 0 < value[0] <= value[1]):
        raise ConfigError(f"--scale-jitter: must be MIN MAX with 0 < MIN <= MAX, got {value!r}")
    value = cfg["color_jitter"]
    if value is None or isinstance(value, bool):
        return
    nums = isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value
    )
    if not (nums and len(value) == 4 and value[3] <= 0.5):
        raise ConfigError(
            "--color-jitter: must be on/off or BRIGHTNESS CONTRAST SATURATION HUE "
            f"(each >= 0, hue <= 0.5), got {value!r}"
        )


def _pretrained(source: Any) -> None:
    """``--pretrained``: what :func:`detnorm.weights.load.load_weights` accepts (checked offline)."""
    from urllib.parse import urlparse

    from detnorm.weights.safe_load import WEIGHT_ALIASES

    text = str(source)
    if text == "none" or text in WEIGHT_ALIASES or urlparse(text).scheme in ("http", "https"):
        return
    if not Path(text).expanduser().is_file():
        raise ConfigError(
            f"--pretrained: got {source!r}; allowed: none, {', '.join(WEIGHT_ALIASES)}, an "
            "http(s) URL, or an existing weights file"
        )


def validate(cfg: dict) -> None:
    """Raise :class:`ConfigError` (one line naming the option) on the first bad value."""
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}")
    for key in NORM_KEYS:
        _choice(cfg, key, NORM_NAMES, none_ok=key != "norm")
    _int(cfg, "gn_groups", 1)
    _choice(cfg, "depth", (18, 34, 50, 101))
    _choice(cfg, "box_head", ("2fc", "4conv1fc"), none_ok=True)
    _int(cfg, "trainable_backbone_layers", 0, 5, none_ok=True)
    _choice(cfg, "input_format", ("rgb", "caffe2"), none_ok=True)
    _choice(cfg, "stride_in_1x1", (True, False), none_ok=True)
    _choice(cfg, "schedule", tuple(SCHEDULES))
    _int(cfg, "max_steps", 1, none_ok=True)
    _int(cfg, "max_epochs", 1, none_ok=True)
    _choice(cfg, "optimizer", OPTIMIZERS)
    _choice(cfg, "lr_schedule", LR_SCHEDULES)
    _int(cfg, "accumulate_grad_batches", 1)
    _int(cfg, "max_detections", 1, none_ok=True)
    _int(cfg, "early_stopping_patience", 1, none_ok=True)
    _choice(cfg, "keep_empty", (True, False))
    _jitter(cfg)
    _loggers(cfg)
    for key in ("base_lr", "warmup_factor"):
        if not isinstance(cfg[key], (int, float)) or cfg[key] <= 0:
            raise ConfigError(f"{option(key)}: must be a positive number, got {cfg[key]!r}")
    _int(cfg, "warmup_iters", 0)
    for key in ("weight_decay", "norm_weight_decay", "momentum"):
        if not isinstance(cfg[key], (int, float)) or cfg[key] < 0:
            raise ConfigError(f"{option(key)}: must be a number >= 0, got {cfg[key]!r}")
    for key in ("batch_size", "devices", "num_nodes", "max_size", "test_size", "precise_bn_iters"):
        _int(cfg, key, 1)
    _int(cfg, "num_workers", 0)
    _int(cfg, "seed", 0)
    _int(cfg, "log_every_n_steps", 1)
    for key in ("eval_period", "checkpoint_period"):
        _int(cfg, key, 1, none_ok=True)
    _choice(cfg, "accelerator", ACCELERATORS)
    _choice(cfg, "precision", PRECISIONS)
    _choice(cfg, "eval_backend", ("pycocotools", "faster"))
    clip = cfg["clip_grad_norm"]
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float))
                             or not clip > 0 or clip == float("inf")):  # fmt: skip
        raise ConfigError(f"--clip-grad-norm: must be a positive number, got {clip!r}")
    for key in ("deterministic", "precise_bn", "warmup_floor", "force_resume", "overwrite",
                "trust_weights", "skip_bad_images"):  # fmt: skip
        _choice(cfg, key, (True, False))
    scales = cfg["train_scales"]
    if (
        not isinstance(scales, (list, tuple))
        or not scales
        or not all(isinstance(s, int) and s > 0 for s in scales)
    ):
        raise ConfigError(f"--train-scales: must be a list of positive integers, got {scales!r}")
    if not isinstance(cfg["model_kwargs"], dict):
        raise ConfigError(f"model_kwargs: must be a mapping, got {cfg['model_kwargs']!r}")
    _pretrained(cfg["pretrained"])
    if cfg["pretrained_prefix"] is not None and not isinstance(cfg["pretrained_prefix"], str):
        raise ConfigError(
            f"--pretrained-prefix: must be a key prefix such as 'module.encoder.', "
            f"got {cfg['pretrained_prefix']!r}"
        )
    _path(cfg, "data", "dir")
    _path(cfg, "train_ann", "file")
    _path(cfg, "val_ann", "file")
    _path(cfg, "train_images", "dir")
    _path(cfg, "val_images", "dir")
    if cfg["resume"] not in (None, "auto"):
        _path(cfg, "resume", "file")


def write_yaml(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as YAML to ``path`` atomically (:func:`detnorm.io.atomic_write`)."""
    return atomic_write(
        path, functools.partial(yaml.safe_dump, obj, sort_keys=False, default_flow_style=None)
    )
