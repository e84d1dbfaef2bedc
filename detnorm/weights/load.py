"""One entry point for every checkpoint users have: :func:`load_weights`.

================================ ==================================== ==========================
source (``detect_format``)        loads into                           layouts it fits
================================ ==================================== ==========================
torchvision ImageNet ResNet       ``model.backbone.body``              backbone bn / frozen_bn /
(``torchvision_resnet``,                                               sync_bn; any FPN and heads
``"imagenet"``)
the same, GN/LN/IN-pretrained     ``model.backbone.body``              backbone with the same
(``tools/pretrain_backbone.py``;                                       GroupNorm (groups checked
no running statistics)                                                 by ``<file>.json``)
torchvision Mask R-CNN COCO       the whole model                      ``TORCHVISION_LAYOUTS``
(``torchvision_maskrcnn``,                                             (v1: frozen_bn backbone,
``"coco"``, ``"coco_v2"``)                                             rest none, 2fc; v2: all bn)
Detectron ``R-50-GN.pkl`` etc.    ``model.backbone.body``              backbone gn (32 groups)
(``caffe2``, GN blobs)
Detectron MSRA ``R-50.pkl``       ``model.backbone.body``              backbone frozen_bn / bn /
(``caffe2``, AffineChannel)                                            sync_bn; stride in 1x1
detnorm Lightning ``.ckpt``       the whole model                      the layout it was saved from
(``detnorm``)
================================ ==================================== ==========================

Sources (files, URLs, the aliases ``imagenet``/``coco``/``coco_v2``) are resolved and read
by :mod:`detnorm.weights.safe_load`. Every load compares keys and shapes first and, when ``strict`` (the default), raises
:class:`WeightsError` naming the file and listing missing, unexpected and mis-shaped keys
before changing anything. A load also sets what the weights expect: input format
(``caffe2`` for Detectron files, ``rgb`` for torchvision files) and where the stride sits.
Mask R-CNN checkpoints with another class count get fresh class-specific predictor layers.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn
from torchvision.models import resnet

from detnorm.layers.norm import (
    FrozenBatchNorm2d,
    WSConv2d,
    describe_norm,
    is_norm_module,
    norm_layer,
)
from detnorm.modeling.backbone import get_stride_in_1x1, set_stride_in_1x1
from detnorm.modeling.input_transform import set_input_format
from detnorm.weights import caffe2
from detnorm.weights.safe_load import (
    FORMATS,
    WEIGHT_ALIASES,
    WeightsError,
    detect_format,
    read_weights,
    resolve_source,
)

__all__ = [
    "FORMATS",
    "WEIGHT_ALIASES",
    "LoadReport",
    "WeightsError",
    "detect_format",
    "load_weights",
    "model_depth",
]

_CLASS_LAYERS = ("roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred",
                 "roi_heads.mask_predictor.mask_fcn_logits")  # fmt: skip
_BN_LIKE = (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)


@dataclass
class LoadReport:
    """What :func:`load_weights` did. Keys are relative to ``target`` (the module loaded into)."""

    source: str
    format: str
    target: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    reinitialized: list[str] = field(default_factory=list)
    input_format: str = "rgb"
    stride_in_1x1: bool = False
    key_prefix: str | None = None  # where a wrapped file held the model ("" = top level)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"loaded {self.loaded} tensors from {self.source} ({self.format}) into {self.target}"
        ]
        for label in ("missing", "unexpected", "mismatched", "ignored", "reinitialized"):
            keys = getattr(self, label)
            if keys:
                shown = ", ".join(keys[:8]) + (
                    f", ... ({len(keys)} in all)" if len(keys) > 8 else ""
                )
                lines.append(f"  {label}: {shown}")
        lines += [f"  input format: {self.input_format}; stride in 1x1: {self.stride_in_1x1}"]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


def model_depth(model: nn.Module) -> int:
    """ResNet depth of a model from :func:`~detnorm.modeling.maskrcnn.build_maskrcnn`, from its blocks."""
    body = model.backbone.body
    bottleneck = isinstance(body.layer1[0], resnet.Bottleneck)
    return {(False, 2): 18, (False, 6): 34, (True, 6): 50, (True, 23): 101}[
        (bottleneck, len(body.layer3))
    ]


def _require_backbone(body: nn.Module, path: Path, *, gn: bool) -> None:
    """Refuse weights whose norm statistics cannot mean anything in this backbone."""
    norms = [m for m in body.modules() if is_norm_module(m)]
    kinds = sorted({type(m).__name__ for m in norms}) or ["no norm layers"]
    ws = any(isinstance(m, WSConv2d) for m in body.modules())
    if gn and (
        ws
        or not norms
        or not all(isinstance(m, nn.GroupNorm) and m.num_groups == 32 for m in norms)
    ):
        raise WeightsError(
            f"{path}: Detectron GN weights were trained with GroupNorm(32 groups) and plain convs, "
            f"but the backbone has {', '.join(kinds)}{' with weight-standardized convs' if ws else ''}; "
            "build the model with backbone_norm='gn', gn_groups=32"
        )
    if not gn and (not norms or not all(isinstance(m, _BN_LIKE) for m in norms)):
        raise WeightsError(
            f"{path}: BatchNorm-trained weights cannot initialize a backbone with {', '.join(kinds)}: "
            "their scales and biases were learned for BN statistics and are meaningless under "
            "other norms. A GN backbone needs GN-pretrained weights (e.g. Detectron's R-50-GN.pkl) "
            "or training from scratch (--pretrained none); for these weights use "
            "backbone_norm frozen_bn, bn or sync_bn"
        )


def _pretrain_meta(path: Path) -> dict:
    """The sidecar ``<weights>.json`` of ``tools/pretrain_backbone.py`` ({} when absent)."""
    side = path.with_name(path.name + ".json")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _require_group_norm(body: nn.Module, path: Path, meta: dict) -> None:
    """Refuse torchvision-layout weights pretrained with GN/LN/IN (no running statistics)
    for a backbone without GroupNorm, or, when the sidecar names the norm, with other groups."""
    norms = [m for m in body.modules() if is_norm_module(m)]
    kinds = sorted({type(m).__name__ for m in norms}) or ["no norm layers"]
    trained = meta.get("norm", "a GroupNorm-family norm (gn, ln, in or gn_ws)")
    if not norms or not all(isinstance(m, nn.GroupNorm) for m in norms):
        raise WeightsError(
            f"{path}: these torchvision-layout weights were pretrained with {trained} (their "
            f"norm layers have no running statistics), but the backbone has {', '.join(kinds)}; "
            "build the model with the norm they were pretrained with (e.g. --backbone-norm gn) "
            "or use BatchNorm-pretrained weights for frozen_bn, bn or sync_bn"
        )
    if meta.get("norm") in ("gn", "ln", "in", "gn_ws"):
        groups = int(meta.get("gn_groups", 32))
        make = norm_layer(meta["norm"], groups=groups)
        ws = any(isinstance(m, WSConv2d) for m in body.modules())
        for name, m in body.named_modules():
            if isinstance(m, nn.GroupNorm) and make(m.num_channels).num_groups != m.num_groups:
                raise WeightsError(
                    f"{path}: pretrained with {describe_norm(meta['norm'], groups=groups)}, "
                    f"but backbone layer {name} has GroupNorm({m.num_groups}, {m.num_channels}); "
                    "build the backbone with the same norm and --gn-groups"
                )
        if ws != (meta["norm"] == "gn_ws"):
            raise WeightsError(
                f"{path}: pretrained with {meta['norm']}, but the backbone "
                f"{'has' if ws else 'has no'} weight-standardized convs; use the same norm"
            )


def _upgrade_legacy_keys(state: dict) -> int:
    """Rename keys of torchvision < 0.12 checkpoints (RPN conv, mask head) in place."""
    renames = {
        "rpn.head.conv.weight": "rpn.head.conv.0.0.weight",
        "rpn.head.conv.bias": "rpn.head.conv.0.0.bias",
    }
    for key in list(state):
        m = re.fullmatch(r"roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)", key)
        if m:
            renames[key] = f"roi_heads.mask_head.{int(m.group(1)) - 1}.0.{m.group(2)}"
    moved = [k for k in renames if k in state]
    for key in moved:
        state[renames[key]] = state.pop(key)
    return len(moved)


def _compare(target: nn.Module, state: dict) -> tuple[list[str], list[str], list[str]]:
    """Missing, unexpected, and mis-shaped keys of ``state`` for ``target``.

    BN's ``num_batches_tracked`` is optional (absent from old and FrozenBN checkpoints) and
    is dropped when loading into FrozenBN, as torchvision does.
    """
    expected = target.state_dict()

    def droppable(k: str) -> bool:
        return (
            k.endswith(".num_batches_tracked") and k.rsplit(".", 1)[0] + ".running_mean" in expected
        )

    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in expected and not droppable(k)]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    return missing, unexpected, mismatched


def _reinit_class_layers(model: nn.Module, names: list[str]) -> None:
    """Detectron2's init for new predictors: N(0, 0.01) scores, N(0, 0.001) boxes/masks, zero bias."""
    for name in names:
        layer = model.get_submodule(name)
        nn.init.normal_(layer.weight, std=0.01 if name.endswith("cls_score") else 0.001)
        nn.init.zeros_(layer.bias)


def load_weights(
    model: nn.Module,
    source: str | os.PathLike,
    *,
    strict: bool = True,
    num_classes: int | None = None,
    logger=print,
    trust: bool = False,
    prefix: str | None = None,
) -> LoadReport:
    """Load ``source`` into a model from :func:`detnorm.modeling.maskrcnn.build_maskrcnn`; see the module doc.

    ``source`` is a file, an http(s) URL or an alias (``"imagenet"``, ``"coco"``,
    ``"coco_v2"``); URLs download once into torch.hub's cache (``$TORCH_HOME``).
    ``num_classes``, if given, must equal the model's (background included). With
    ``strict=False`` missing/unexpected/mis-shaped keys are reported and skipped.
    ``logger`` receives the report's summary. A file whose pickle needs anything beyond
    tensors and containers is refused (``UnsafeWeightsError``) unless ``trust``. A model saved
    inside a wrapper (``module.encoder.``, ``model.backbone.``, next to a head or an EMA copy)
    is found by its key prefix (:mod:`detnorm.weights.prefixes`); ``prefix`` chooses among several.
    """
    classes = model.roi_heads.box_predictor.cls_score.out_features
    if num_classes is not None and num_classes != classes:
        raise ValueError(f"num_classes={num_classes} but the model has {classes} classes")
    path = resolve_source(source, depth=model_depth(model))
    fmt, state, ignored, hparams = read_weights(path, trust=trust, prefix=prefix)
    body = model.backbone.body
    whole = fmt in ("torchvision_maskrcnn", "detnorm")
    report = LoadReport(source=str(path), format=fmt, target="model" if whole else "backbone.body",
                        ignored=ignored, stride_in_1x1=get_stride_in_1x1(body))  # fmt: skip
    if fmt != "detnorm" and "key_prefix" in hparams:
        report.key_prefix = hparams["key_prefix"]
        report.notes.append(f"the {fmt} weights were found under the key prefix "
                            f"{report.key_prefix!r}; {len(ignored)} other key(s) ignored")  # fmt: skip
    input_format, stride = "rgb", False
    if fmt == "torchvision_resnet":
        if any(k.endswith(".running_mean") for k in state):
            _require_backbone(body, path, gn=False)
        else:  # norm layers without running statistics: a GroupNorm-family pretraining
            _require_group_norm(body, path, _pretrain_meta(path))
        report.ignored += [k for k in state if k.startswith("fc.")]
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    elif fmt == "caffe2":
        kind = caffe2.blob_kind(state)
        _require_backbone(body, path, gn=kind == "gn")
        state, unexpected, skipped = caffe2.caffe2_to_torchvision(state, body)
        report.unexpected += unexpected
        report.ignored += skipped
        input_format, stride = "caffe2", kind == "affine"
    else:
        if n := _upgrade_legacy_keys(state):
            report.notes.append(f"renamed {n} keys of an old torchvision checkpoint")
        expected = model.state_dict()
        for name in _CLASS_LAYERS:
            key = f"{name}.weight"
            if key in state and key in expected and state[key].shape != expected[key].shape:
                report.reinitialized.append(name)
                state = {k: v for k, v in state.items() if not k.startswith(name + ".")}
        if fmt == "detnorm":
            input_format = hparams.get("input_format", model.transform.input_format)
            stride = bool(hparams.get("stride_in_1x1", report.stride_in_1x1))
    target = model if whole else body
    missing, unexpected, mismatched = _compare(target, state)
    report.missing += [k for k in missing if k.rsplit(".", 1)[0] not in report.reinitialized]
    report.unexpected += unexpected
    report.mismatched += mismatched
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise WeightsError(
            f"{path} does not fit the model ({fmt}, strict=True):\n" + report.summary()
        )
    skip = {m.split(" ", 1)[0] for m in mismatched}
    expected = target.state_dict()
    loadable = {k: v for k, v in state.items() if k in expected and k not in skip}
    target.load_state_dict(loadable, strict=False)
    report.loaded = len(loadable)
    _reinit_class_layers(model, report.reinitialized)
    if stride != report.stride_in_1x1:
        try:
            set_stride_in_1x1(body, stride)
            where = "1x1" if stride else "3x3"
            report.notes.append(f"moved the stride to the {where} conv, as these weights expect")
        except ValueError as e:  # a basic-block ResNet has no 1x1 conv to stride in
            report.notes.append(f"stride not moved: {e}")
    report.stride_in_1x1 = get_stride_in_1x1(body)
    if fmt == "torchvision_maskrcnn" and path.name.startswith("maskrcnn_resnet50_fpn_coco-"):
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.eps = 0.0
        report.notes.append("FrozenBN eps set to 0, as torchvision does for these COCO_V1 weights")
    set_input_format(model, input_format)
    report.input_format = input_format
    logger(report.summary())
    return report
