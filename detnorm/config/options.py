"""Every ``detnorm-train`` option, defined once (see :class:`detnorm.config.option.Option`).

The order of :data:`OPTIONS` is the order of ``--help``, of the README's option table and of a
resolved ``config.yaml``. ``base_lr`` and ``warmup_iters`` are stated at 16 images per step and
scaled linearly to the run's batch (``detnorm.solver.schedule``).
"""

from __future__ import annotations

from detnorm.config import checks
from detnorm.config.option import Option
from detnorm.layers.norm import NORM_NAMES
from detnorm.solver.optimizer import OPTIMIZERS
from detnorm.solver.schedule import LR_SCHEDULES, SCHEDULES

__all__ = ["ALIASES", "DEFAULTS", "MODULE_KEYS", "OPTIONS", "PRECISIONS"]

PRECISIONS = ("32-true", "32", "64-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true")
_NORMS = f"norm of every component: {', '.join(NORM_NAMES)}"


def _norm(component: str, what: str) -> Option:
    return Option(f"{component}_norm", None, f"norm of the {what} (overrides --norm)", "model",
                  choices=NORM_NAMES, module=True)  # fmt: skip


# fmt: off
_OPTIONS = [  # a table: one record per option, kept compact
    # ---------------------------------------------------------------- model
    Option("norm", "frozen_bn", _NORMS, "model", choices=NORM_NAMES, module=True),
    _norm("backbone", "ResNet body"),
    _norm("fpn", "FPN"),
    _norm("box_head", "RoI box head"),
    _norm("mask_head", "RoI mask head"),
    Option("gn_groups", 32, "groups of gn / gn_ws", "model", type=int, low=1, module=True),
    Option("depth", 50, "ResNet depth", "model", type=int, choices=(18, 34, 50, 101), module=True),
    Option("box_head", None, "box head (default: 4conv1fc when the box head has a norm, else 2fc)",
           "model", choices=("2fc", "4conv1fc"), module=True),
    Option("max_detections", None, "detections per image: the model's limit and COCOeval's "
           "maxDets (default: model_kwargs.box_detections_per_img, else 100)", "model", type=int,
           low=1),
    Option("pretrained", "none", "weights to start from: none, imagenet, coco, coco_v2, an "
           "http(s) URL or a weights file", "model", extra=checks.pretrained),
    Option("pretrained_prefix", None, "key prefix of the model in a wrapped --pretrained file",
           "model", extra=checks.pretrained_prefix),
    Option("trainable_backbone_layers", None, "ResNet stages that train, from layer4 down "
           "(default: 3 when pretrained, else 5)", "model", type=int, low=0, high=5, module=True),
    Option("input_format", None, "rgb or caffe2 (null: rgb, or what the pretrained weights need)",
           "model", choices=("rgb", "caffe2"), cli=None, module=True),
    Option("stride_in_1x1", None, "stride in the 1x1 convs (null: false, or what caffe2 weights "
           "need)", "model", type=bool, cli=None, module=True),
    Option("model_kwargs", {}, "extra torchvision MaskRCNN / build_maskrcnn keywords (RPN/RoI "
           "sampling, anchor_sizes, fpn_channels, ...); merged key by key", "model", type=dict,
           cli=None, module=True),
    # ---------------------------------------------------------------- solver
    Option("schedule", "1x", f"{'|'.join(SCHEDULES)}: 90k/180k/270k iterations at 16 images",
           "solver", choices=tuple(SCHEDULES), module=True),
    Option("max_steps", None, "shorten the run; LR steps keep their fractions, warmup a floor",
           "solver", type=int, low=1, module=True),
    Option("max_epochs", None, "train N epochs instead of the schedule's iterations (LR steps "
           "keep their fractions; wins over --max-steps)", "solver", type=int, low=1),
    Option("optimizer", "sgd", f"{'|'.join(OPTIMIZERS)} (both: weight decay 0 on norms)", "solver",
           choices=OPTIMIZERS, module=True),
    Option("lr_schedule", "step", f"{'|'.join(LR_SCHEDULES)} after warmup (step: x0.1 twice)",
           "solver", choices=LR_SCHEDULES, module=True),
    Option("base_lr", 0.02, "LR at 16 images per step (scaled linearly)", "solver", type=float,
           low=0, strict=True, module=True),
    Option("warmup_iters", 1000, "warmup iterations at 16 images per step (scaled)", "solver",
           type=int, low=0, module=True),
    Option("warmup_factor", 0.001, "LR factor at the first warmup step", "solver", type=float,
           low=0, strict=True, cli=None, module=True),
    Option("warmup_floor", True, "keep at least min(1000, max(50, 10%)) warmup steps when "
           "--max-steps shortens the run", "solver", type=bool, cli="negate", module=True),
    Option("weight_decay", 1e-4, "weight decay of every parameter but the norms'", "solver",
           type=float, low=0, cli=None, module=True),
    Option("norm_weight_decay", 0.0, "weight decay of norm parameters", "solver", type=float,
           low=0, cli=None, module=True),
    Option("momentum", 0.9, "SGD momentum", "solver", type=float, low=0, cli=None, module=True),
    Option("clip_grad_norm", None, "clip the gradients' total L2 norm to this value (default: "
           "off)", "solver", type=float, low=0, strict=True),
    # ---------------------------------------------------------------- hardware
    Option("batch_size", 2, "images per device", "hardware", type=int, low=1),
    Option("accumulate_grad_batches", 1, "batches per optimizer step; the LR and schedule follow "
           "devices x nodes x batch size x K", "hardware", type=int, low=1),
    Option("accelerator", "auto", "auto, cpu, gpu, cuda, mps", "hardware",
           choices=("auto", "cpu", "gpu", "cuda", "mps")),
    Option("devices", 1, "devices per node", "hardware", type=int, low=1),
    Option("num_nodes", 1, "nodes", "hardware", type=int, low=1),
    Option("precision", "32-true", "32-true, bf16-mixed, 16-mixed, ...", "hardware",
           choices=PRECISIONS),
    # ---------------------------------------------------------------- data
    Option("data", None, "dataset root (detnorm or COCO layout); default: the embedded dataset",
           "data", extra=checks.existing_dir),
    Option("train_ann", None, "training annotation json", "data", extra=checks.existing_file),
    Option("train_images", None, "training image folder", "data", extra=checks.existing_dir),
    Option("val_ann", None, "validation annotation json", "data", extra=checks.existing_file),
    Option("val_images", None, "validation image folder", "data", extra=checks.existing_dir),
    Option("train_scales", [800], "training short sides (multi-scale)", "data", type=list,
           item=int, cli="list", extra=checks.positive_ints),
    Option("max_size", 1333, "long-side cap (train and test)", "data", type=int, low=1),
    Option("test_size", 800, "short side of evaluation images", "data", type=int, low=1),
    Option("num_workers", 2, "data-loader workers per device", "data", type=int, low=0),
    Option("keep_empty", False, "train on images without annotations too (default: dropped)",
           "data", type=bool, cli="switch"),
    Option("scale_jitter", None, "zoom each training resize by a random factor in [MIN, MAX], "
           "then crop or pad back to its size (e.g. 0.5 2.0; default: off)", "data", type=list,
           item=float, cli="pair", metavar=("MIN", "MAX"), extra=checks.scale_jitter),
    Option("color_jitter", None, "random brightness, contrast, saturation and hue (default "
           "strengths without values: 0.3 0.3 0.3 0.05; default: off)", "data", type=list,
           item=float, cli="on_or_values", metavar="B C S H", extra=checks.color_jitter),
    Option("skip_bad_images", False, "drop images that cannot be read (counted) instead of "
           "stopping", "data", type=bool, cli="switch"),
    # ---------------------------------------------------------------- run
    Option("name", None, "run name (default: r<depth>_<norms>_<schedule>)", "run"),
    Option("output_dir", None, "run directory (default runs/<name>)", "run"),
    Option("resume", None, "continue from a checkpoint; 'auto' (or no value): "
           "<run>/checkpoints/last.ckpt", "run", cli="optional", const="auto", metavar="CKPT|auto",
           extra=checks.resume),
    Option("force_resume", False, "resume even when the config differs from the run's config.yaml",
           "run", type=bool, cli="switch"),
    Option("overwrite", False, "replace the run already in --output-dir instead of refusing",
           "run", type=bool, cli="switch"),
    Option("trust_weights", False, "load --pretrained/--resume files whose pickle holds more "
           "than tensors (it can run code: only for files from a trusted source)", "run",
           type=bool, cli="switch"),
    Option("seed", 0, "random seed", "run", type=int, low=0),
    Option("deterministic", False, "deterministic algorithms (CPU runs are then bit-reproducible)",
           "run", type=bool, cli="switch"),
    Option("eval_period", None, "evaluate every N steps (default: only at the end)", "run",
           type=int, low=1),
    Option("checkpoint_period", None, "write step=N.ckpt every N steps (default: --eval-period)",
           "run", type=int, low=1),
    Option("precise_bn", True, "recompute BN statistics before each evaluation (PreciseBN, when "
           "bn/sync_bn is used)", "run", type=bool, cli="negate"),
    Option("precise_bn_iters", 200, "batches for PreciseBN", "run", type=int, low=1),
    Option("log_every_n_steps", 20, "logging interval", "run", type=int, low=1),
    Option("eval_backend", "faster", "faster (faster-coco-eval; pycocotools when it is missing) "
           "or pycocotools", "run", choices=("pycocotools", "faster"), module=True),
    Option("early_stopping_patience", None, "stop after N evaluations without a better val/score",
           "run", type=int, low=1),
    Option("logger", ["tensorboard"],
           f"{'|'.join(checks.LOGGER_PACKAGES)}, several allowed (metrics.csv is always written)",
           "run", type=list, item=str, cli="list", metavar="NAME", extra=checks.loggers),
]
# fmt: on

OPTIONS: dict[str, Option] = {o.key: o for o in _OPTIONS}
DEFAULTS = {key: opt.default for key, opt in OPTIONS.items()}
MODULE_KEYS = tuple(key for key, opt in OPTIONS.items() if opt.module)

# what other trainers call some keys (detectron2, torchvision's references, Lightning), so that the
# nearest key of `--set learning_rate=...` or of a YAML `lr:` is base_lr
ALIASES = {
    "lr": "base_lr",
    "learning_rate": "base_lr",
    "epochs": "max_epochs",
    "max_iter": "max_steps",
    "iterations": "max_steps",
    "wd": "weight_decay",
    "ims_per_batch": "batch_size",
    "grad_accum": "accumulate_grad_batches",
    "detections_per_img": "max_detections",
    "opt": "optimizer",
    "lr_scheduler": "lr_schedule",
}
