"""Refusals of weights whose norm layers cannot fit the backbone they would initialize.

A norm layer's learned scale and bias only mean something under the normalization they were
trained with: BatchNorm-trained weights (torchvision ImageNet, Detectron MSRA) fit a backbone of
BN-like norms (bn, frozen_bn, sync_bn); Detectron's GN weights fit GroupNorm(32 groups) with plain
convs; torchvision-layout weights pretrained with a GroupNorm-family norm
(``tools/pretrain_backbone.py``: no running statistics) fit the norm named in their sidecar
``<weights>.json``. Each check raises :class:`~detnorm.weights.safe_load.WeightsError` naming
the file, what the backbone has, and what to build instead, before any weight is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from detnorm.layers.norm import (
    FrozenBatchNorm2d,
    describe_norm,
    is_norm_module,
    norm_layer,
)
from detnorm.layers.ws_conv import WSConv2d
from detnorm.weights.safe_load import WeightsError

__all__ = ["pretrain_meta", "require_backbone", "require_group_norm"]

_BN_LIKE = (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)


def require_backbone(body: nn.Module, path: Path, *, gn: bool) -> None:
    """Refuse weights whose norm statistics cannot mean anything in this backbone:
    Detectron GN weights (``gn``) or BatchNorm-trained ones (not ``gn``)."""
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


def pretrain_meta(path: Path) -> dict:
    """The sidecar ``<weights>.json`` of ``tools/pretrain_backbone.py`` ({} when absent)."""
    side = path.with_name(path.name + ".json")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def require_group_norm(body: nn.Module, path: Path, meta: dict) -> None:
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
