"""Finding a model inside a wrapped checkpoint: state_dicts saved under a key prefix.

Real checkpoints are often saved from a wrapper: ``module.`` (DataParallel), ``model.backbone.``
next to a projection head, ``encoder.`` of a self-supervised method, an EMA copy beside the
model, optimizer state next to the weights. :func:`locate_model` flattens the loaded object
(nested dicts joined with ``.``, tensors kept, everything else dropped) and looks for a
*complete* model under one prefix, by the marker keys each one must have:

* a torchvision Mask R-CNN (:data:`MASKRCNN_MARKERS`), preferred;
* otherwise a torchvision ResNet body (:data:`RESNET_MARKERS`).

One candidate prefix loads; several raise :class:`~detnorm.weights.safe_load.WeightsError` listing
them, and an explicit ``prefix`` (``--pretrained-prefix``) chooses. Every key outside the prefix
is reported as ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = ["MASKRCNN_MARKERS", "RESNET_MARKERS", "candidate_prefixes", "flatten", "locate_model"]

RESNET_MARKERS = ("conv1.weight", "layer1.0.conv1.weight", "layer2.0.conv1.weight",
                  "layer3.0.conv1.weight", "layer4.0.conv1.weight")  # fmt: skip
MASKRCNN_MARKERS = (
    *(f"backbone.body.{k}" for k in RESNET_MARKERS),
    "rpn.head.cls_logits.weight",
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.bbox_pred.weight",
    "roi_heads.mask_predictor.mask_fcn_logits.weight",
)
KINDS = (("torchvision_maskrcnn", MASKRCNN_MARKERS), ("torchvision_resnet", RESNET_MARKERS))
# the top-level modules of each kind; other keys under the prefix (a head beside) are ignored
_MODULES = {"torchvision_maskrcnn": ("backbone", "rpn", "roi_heads"),
            "torchvision_resnet": ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc")}  # fmt: skip


def _leaves(obj: object, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix[:-1], obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _leaves(value, f"{prefix}{key}.")


def flatten(obj: object) -> dict[str, torch.Tensor]:
    """Every tensor in nested dicts, keyed by the dotted path: ``{"a": {"b": t}}`` -> ``{"a.b": t}``."""
    return dict(_leaves(obj, ""))


def candidate_prefixes(keys: list[str], markers: tuple[str, ...]) -> list[str]:
    """Prefixes ``P`` under which every ``P + marker`` is a key, shortest first."""
    found = set(keys)
    first = markers[0]
    prefixes = {k[: -len(first)] for k in keys if k.endswith(first)}
    prefixes = {p for p in prefixes if p == "" or p.endswith(".")}
    return sorted((p for p in prefixes if all(p + m in found for m in markers)), key=len)


def _shown(keys: list[str], limit: int = 6) -> str:
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def locate_model(
    path: Path, obj: object, prefix: str | None = None
) -> tuple[str, dict, list[str], dict]:
    """``(format, state_dict, ignored keys, {"key_prefix": P})`` for the model inside ``obj``.

    ``prefix``: the key prefix to use (``""`` for none); its keys must hold a complete Mask
    R-CNN or ResNet body. ``WeightsError`` names the file: nothing complete, several prefixes
    (listed, with the flag that chooses), or a ``prefix`` that holds no complete model.
    """
    from detnorm.weights.safe_load import FORMATS, WeightsError

    flat = flatten(obj)
    if not flat:
        raise WeightsError(
            f"{path}: holds no state_dict of tensors; expected one of {', '.join(FORMATS)}"
        )
    keys = list(flat)
    if prefix is not None:
        for kind, markers in KINDS:
            if prefix in candidate_prefixes(keys, markers):
                return _take(flat, kind, prefix)
        near = sorted({p for _, m in KINDS for p in candidate_prefixes(keys, m)}, key=len)
        raise WeightsError(
            f"{path}: --pretrained-prefix {prefix!r} holds no complete torchvision Mask R-CNN "
            f"or ResNet body; prefixes that do: {', '.join(map(repr, near)) or 'none'}"
        )
    for kind, markers in KINDS:
        found = candidate_prefixes(keys, markers)
        if len(found) == 1:
            return _take(flat, kind, found[0])
        if len(found) > 1:
            what = "Mask R-CNN" if kind == "torchvision_maskrcnn" else "ResNet body"
            raise WeightsError(
                f"{path}: a complete torchvision {what} under {len(found)} key prefixes: "
                f"{', '.join(map(repr, found))}; choose one with --pretrained-prefix"
            )
    raise WeightsError(
        f"{path}: unrecognized state_dict (first keys: {', '.join(keys[:4])}); found no "
        f"complete torchvision Mask R-CNN or ResNet body under any key prefix; expected one "
        f"of {', '.join(FORMATS)}"
    )


def _take(flat: dict, kind: str, prefix: str) -> tuple[str, dict, list[str], dict]:
    heads = tuple(f"{prefix}{m}." for m in _MODULES[kind])
    state = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(heads)}
    ignored = [k for k in flat if not k.startswith(heads)]
    return kind, state, ignored, {"key_prefix": prefix}
