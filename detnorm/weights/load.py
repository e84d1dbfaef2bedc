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
by :mod:`detnorm.weights.safe_load`. Weights whose norm layers cannot fit the backbone are
refused first (:mod:`detnorm.weights.norm_checks`). Every load compares keys and shapes and,
when ``strict`` (the default), raises :class:`WeightsError` naming the file and listing
missing, unexpected and mis-shaped keys before changing anything. A load also sets what the weights expect: input format
(``caffe2`` for Detectron files, ``rgb`` for torchvision files) and where the stride sits.
Mask R-CNN checkpoints with another class count get fresh class-specific predictor layers
(:mod:`detnorm.weights.torchvision`, which also renames the keys of old torchvision files).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from torch import nn
from torchvision.models import resnet

from detnorm.modeling.backbone import get_stride_in_1x1, set_stride_in_1x1
from detnorm.modeling.input_transform import set_input_format
from detnorm.weights import caffe2
from detnorm.weights.norm_checks import pretrain_meta, require_backbone, require_group_norm
from detnorm.weights.safe_load import (
    FORMATS,
    WEIGHT_ALIASES,
    WeightsError,
    detect_format,
    read_weights,
    resolve_source,
)
from detnorm.weights.torchvision import (
    drop_mismatched_class_layers,
    match_coco_v1_eps,
    reinit_class_layers,
    upgrade_legacy_keys,
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
            require_backbone(body, path, gn=False)
        else:  # norm layers without running statistics: a GroupNorm-family pretraining
            require_group_norm(body, path, pretrain_meta(path))
        report.ignored += [k for k in state if k.startswith("fc.")]
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    elif fmt == "caffe2":
        kind = caffe2.blob_kind(state)
        require_backbone(body, path, gn=kind == "gn")
        state, unexpected, skipped = caffe2.caffe2_to_torchvision(state, body)
        report.unexpected += unexpected
        report.ignored += skipped
        input_format, stride = "caffe2", kind == "affine"
    else:
        if n := upgrade_legacy_keys(state):
            report.notes.append(f"renamed {n} keys of an old torchvision checkpoint")
        state, dropped = drop_mismatched_class_layers(state, model.state_dict())
        report.reinitialized += dropped
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
    reinit_class_layers(model, report.reinitialized)
    if stride != report.stride_in_1x1:
        try:
            set_stride_in_1x1(body, stride)
            where = "1x1" if stride else "3x3"
            report.notes.append(f"moved the stride to the {where} conv, as these weights expect")
        except ValueError as e:  # a basic-block ResNet has no 1x1 conv to stride in
            report.notes.append(f"stride not moved: {e}")
    report.stride_in_1x1 = get_stride_in_1x1(body)
    if fmt == "torchvision_maskrcnn" and match_coco_v1_eps(model, path):
        report.notes.append("FrozenBN eps set to 0, as torchvision does for these COCO_V1 weights")
    set_input_format(model, input_format)
    report.input_format = input_format
    logger(report.summary())
    return report
