"""The RoI heads of :func:`detnorm.modeling.maskrcnn.build_maskrcnn`, each with its own norm.

Box heads (:data:`BOX_HEADS`): ``2fc`` is torchvision's ``TwoMLPHead`` (no convolution, so no
norm); ``4conv1fc`` is ``FastRCNNConvFCHead`` with four 3x3 convs carrying the box-head norm and
one fc, as in the GN paper and ``maskrcnn_resnet50_fpn_v2``. The mask head is torchvision's
``MaskRCNNHeads`` (four 3x3 convs). Each head is one component built by
:func:`detnorm.layers.norm.build_with_norm`. A conv followed by a norm has no bias.
"""

from __future__ import annotations

import functools

from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads

from detnorm.errors import ConfigError
from detnorm.layers.norm import NormLayer, build_with_norm

__all__ = ["BOX_HEADS", "build_box_head", "build_mask_head", "resolve_box_head"]

BOX_HEADS = ("2fc", "4conv1fc")
_NORMED_CONVS = 4  # 3x3 convs of the 4conv1fc box head and of the mask head


def resolve_box_head(box_head: str | None, norm: str) -> str:
    """The box head kind for ``box_head`` (``None``: 4conv1fc when ``norm`` is a norm, else 2fc).

    Raises ``ConfigError`` with key ``"box_head"`` for an unknown kind, or for ``2fc`` with a
    box-head norm (it has no convolution to normalize).
    """
    if box_head is None:
        box_head = "2fc" if norm == "none" else "4conv1fc"
    if box_head not in BOX_HEADS:
        raise ConfigError("box_head", f"must be one of {', '.join(BOX_HEADS)}, got {box_head!r}")
    if box_head == "2fc" and norm != "none":
        raise ConfigError(
            "box_head",
            f"'2fc' has no convolution to normalize, so box_head_norm={norm!r} cannot apply; "
            "use box_head='4conv1fc' or box_head_norm='none'",
        )
    return box_head


def _two_mlp_head(
    norm_layer: NormLayer | None, *, channels: int, resolution: int, fc_dim: int
) -> TwoMLPHead:
    # norm_layer is None: resolve_box_head refuses 2fc with a norm
    return TwoMLPHead(channels * resolution * resolution, fc_dim)


def _conv_fc_head(
    norm_layer: NormLayer | None, *, channels: int, resolution: int, fc_dim: int
) -> FastRCNNConvFCHead:
    return FastRCNNConvFCHead(
        (channels, resolution, resolution),
        [channels] * _NORMED_CONVS,
        [fc_dim],
        norm_layer=norm_layer,
    )


_BOX_HEAD_BUILDERS = {"2fc": _two_mlp_head, "4conv1fc": _conv_fc_head}


def build_box_head(
    kind: str,
    *,
    norm: str,
    channels: int,
    resolution: int = 7,
    fc_dim: int = 1024,
    groups: int = 32,
) -> nn.Module:
    """Box head ``kind`` (see :func:`resolve_box_head`) over ``channels`` x ``resolution``^2 RoI
    features, ending in ``fc_dim`` features; its convs get norm ``norm`` and its conv rule."""
    kind = resolve_box_head(kind, norm)
    build = functools.partial(
        _BOX_HEAD_BUILDERS[kind], channels=channels, resolution=resolution, fc_dim=fc_dim
    )
    return build_with_norm(norm, build, groups=groups)


def _mask_head(norm_layer: NormLayer | None, *, channels: int) -> MaskRCNNHeads:
    return MaskRCNNHeads(channels, [channels] * _NORMED_CONVS, 1, norm_layer=norm_layer)


def build_mask_head(*, norm: str, channels: int, groups: int = 32) -> MaskRCNNHeads:
    """torchvision's mask head: four 3x3 convs, ``channels`` wide, with norm ``norm``."""
    return build_with_norm(norm, functools.partial(_mask_head, channels=channels), groups=groups)
