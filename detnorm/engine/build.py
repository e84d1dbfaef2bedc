"""The pieces of a training run, built from a validated config dict.

The data module, the module (model + recipe) and its hyperparameters, pretrained weights, the
resume-checkpoint check and the norm table. ``detnorm.engine.run.run_training`` assembles them
with the Trainer of :mod:`detnorm.engine.trainer`. Bad values raise ``ConfigError`` with the
option's key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from detnorm.config import MODULE_KEYS, OPTIONS
from detnorm.engine.module import DetnormModule
from detnorm.errors import ConfigError
from detnorm.layers.norm import describe_norm
from detnorm.modeling.maskrcnn import resolve_norms

__all__ = [
    "box_head_name",
    "build_datamodule",
    "build_module",
    "check_resume",
    "load_pretrained",
    "module_hparams",
    "norm_table",
    "rank",
    "run_name",
    "say",
]

# hparams that must agree between a checkpoint and the config for --resume
_ARCH_KEYS = ("num_classes", "depth", "gn_groups", "box_head", "trainable_backbone_layers",
              "norm", "backbone_norm", "fpn_norm", "box_head_norm", "mask_head_norm")  # fmt: skip


def rank() -> int:
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(key):
            return int(os.environ[key])
    return 0


def say(*args) -> None:
    if rank() == 0:
        print(*args, flush=True)


def build_datamodule(cfg: dict, **kw):
    """The DataModule of ``cfg``'s data options, set up for fitting. Keys ``cfg`` leaves out take
    the schema's defaults (evaluating a checkpoint passes only some)."""
    from detnorm.data.datamodule import DetectionDataModule
    from detnorm.data.image_check import BadImagesError

    def get(key):
        return cfg.get(key, OPTIONS[key].default)

    dm = DetectionDataModule(
        get("data"),
        **{
            k: get(k)
            for k in (
                "train_ann",
                "train_images",
                "val_ann",
                "val_images",
                "batch_size",
                "num_workers",
                "max_size",
                "scale_jitter",
                "color_jitter",
                "seed",
                "accumulate_grad_batches",
            )
        },  # fmt: skip
        train_scales=tuple(get("train_scales")),
        keep_empty=bool(get("keep_empty")),
        skip_bad_images=bool(get("skip_bad_images")),
        **kw,
    )
    try:
        dm.setup("fit")
    except BadImagesError as e:  # one summary line, then one line per file
        raise ConfigError("data", str(e)) from None
    except ConfigError:  # a path option at fault, named by the data layer
        raise
    except (ValueError, OSError) as e:  # a dataset file's content; the message names the file
        raise ConfigError("data", one_line(e)) from None
    return dm


def one_line(e: BaseException) -> str:
    return re.sub(r"\s*\n\s*", "; ", str(e).strip())


def module_hparams(cfg: dict, dm, total_batch_size: int) -> dict:
    """``DetnormModule`` keyword arguments: the config's module options (``MODULE_KEYS``) and
    what the run derives: the data's classes, the defaults that depend on ``--pretrained``, and
    the test size and ``--max-detections`` as ``MaskRCNN`` keywords."""
    hp = {key: cfg[key] for key in MODULE_KEYS}
    if hp["trainable_backbone_layers"] is None:
        hp["trainable_backbone_layers"] = 3 if cfg["pretrained"] != "none" else 5
    hp["input_format"] = hp["input_format"] or "rgb"
    hp["stride_in_1x1"] = bool(hp["stride_in_1x1"])
    hp["model_kwargs"] = {"min_size": cfg["test_size"], "max_size": cfg["max_size"],
                          **cfg["model_kwargs"]}  # fmt: skip
    if cfg["max_detections"] is not None:  # --max-detections wins over model_kwargs
        hp["model_kwargs"]["box_detections_per_img"] = cfg["max_detections"]
    return dict(
        num_classes=dm.num_classes,
        label_to_cat_id={str(k): int(v) for k, v in dm.label_to_cat_id.items()},
        category_names=[c["name"] for c in dm.categories],
        total_batch_size=total_batch_size,
        **hp,
    )


def build_module(hparams: dict) -> DetnormModule:
    """``DetnormModule(**hparams)``; a bad value raises ``ConfigError`` with its key, from
    wherever it is found (the schema, a norm layer, the model builder)."""
    try:
        return DetnormModule(**hparams)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # torchvision's own checks of model_kwargs
        raise ConfigError("model_kwargs", one_line(e)) from None


def load_pretrained(
    module: DetnormModule, source: str, *, trust: bool = False, prefix: str | None = None
) -> None:
    """Load ``--pretrained`` weights; record the input format / stride they imply in hparams.

    ``trust`` (``--trust-weights``) lets a file that pickles more than tensors load; ``prefix``
    (``--pretrained-prefix``) picks the model's key prefix inside a wrapped file."""
    from detnorm.weights.load import load_weights
    from detnorm.weights.safe_load import DownloadError, UnsafeWeightsError

    try:
        report = load_weights(module.model, source, num_classes=module.hparams.num_classes,
                              logger=say, trust=trust, prefix=prefix)  # fmt: skip
    except UnsafeWeightsError as e:
        raise ConfigError("pretrained", str(e)) from None
    except DownloadError as e:  # offline: names the URL and the cache path to put the file at
        raise ConfigError("pretrained", f"{source}: {one_line(e)}") from None
    except (ValueError, KeyError, RuntimeError, OSError) as e:
        raise ConfigError(
            "pretrained", f"{source}: does not fit the config: {one_line(e)}"
        ) from None
    module.hparams.input_format = report.input_format
    module.hparams.stride_in_1x1 = bool(report.stride_in_1x1)


def check_resume(path: Path, module: DetnormModule, *, trust: bool = False) -> int:
    """Raise ConfigError when checkpoint ``path`` was made with another architecture; else
    return its global step. The file is read with ``weights_only=True`` unless ``trust``."""
    from detnorm.weights.safe_load import UnsafeWeightsError, torch_load

    try:
        ckpt = torch_load(path, trust=trust)
        saved = DetnormModule.upgrade_hparams(ckpt["hyper_parameters"])
        state = ckpt["state_dict"]
    except UnsafeWeightsError as e:
        raise ConfigError("resume", str(e)) from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is a usage error here
        raise ConfigError("resume", f"{path}: not a detnorm checkpoint ({one_line(e)})") from None
    hp = dict(module.hparams)
    saved_norms = resolve_norms(*(saved.get(k) for k in
                                  ("norm", "backbone_norm", "fpn_norm", "box_head_norm", "mask_head_norm")))  # fmt: skip
    for comp, name in module.norms.items():
        if saved_norms[comp] != name:
            raise ConfigError("resume", f"{path}: checkpoint has {comp} norm {saved_norms[comp]!r}, "
                              f"the config asks for {name!r}; use the checkpoint's options or a new --output-dir")  # fmt: skip
    for key in _ARCH_KEYS:
        if key.endswith("norm"):
            continue
        if saved.get(key) != hp.get(key):
            raise ConfigError("resume", f"{path}: checkpoint has {key}={saved.get(key)!r}, "
                              f"the config asks for {hp.get(key)!r}")  # fmt: skip
    own = module.state_dict()
    for key, value in own.items():
        if key not in state or state[key].shape != value.shape:
            raise ConfigError("resume", f"{path}: parameter {key} is missing or has another shape")
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
