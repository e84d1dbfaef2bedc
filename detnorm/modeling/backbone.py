"""The ResNet body and FPN of :func:`detnorm.modeling.maskrcnn.build_maskrcnn`, with any norm.

Norm names become layers only through :func:`detnorm.layers.norm.norm_layer`. A ResNet without a norm
gets conv biases; frozen stages get FrozenBN (frozen is a layer, not a mode). The stride
helpers move each stage's stride between the 1x1 and the 3x3 conv (MSRA vs torchvision ResNets).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from detnorm.layers.norm import convert_frozen_bn, finalize_component, norm_layer

__all__ = [
    "DEPTHS",
    "build_resnet",
    "fpn_backbone",
    "freeze_stage_norms",
    "get_stride_in_1x1",
    "set_stride_in_1x1",
]

DEPTHS = {18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50, 101: resnet.resnet101}
# Stages from the top, as torchvision counts trainable layers; the stem (conv1 + bn1) is last.
_STAGES = ("layer4", "layer3", "layer2", "layer1", "stem")


def _bottleneck_stage_heads(module: nn.Module) -> list[resnet.Bottleneck]:
    """First bottleneck of each stage (the blocks with a projection shortcut)."""
    return [
        m for m in module.modules() if isinstance(m, resnet.Bottleneck) and m.downsample is not None
    ]


def set_stride_in_1x1(module: nn.Module, enabled: bool) -> bool:
    """Put each stage's stride in the first 1x1 conv (``enabled``) or in the 3x3 (torchvision).

    MSRA's original ResNets (Detectron's ``R-50.pkl``, ``STRIDE_1X1=True``) stride in the 1x1
    conv; torchvision and Detectron's GN models stride in the 3x3. Only strides move, so
    parameters and state_dict keys are unchanged and output shapes are identical. ``module``
    is a ResNet, a backbone, or a whole model. Returns True when a stride was moved.
    """
    heads = _bottleneck_stage_heads(module)
    if enabled and not heads:
        raise ValueError("stride_in_1x1 applies to bottleneck ResNets (depth 50 or 101)")
    changed = False
    for block in heads:
        stride = block.downsample[0].stride
        new = (stride, (1, 1)) if enabled else ((1, 1), stride)
        changed |= (block.conv1.stride, block.conv2.stride) != new
        block.conv1.stride, block.conv2.stride = new
    return changed


def get_stride_in_1x1(module: nn.Module) -> bool:
    """True when ``module``'s strided bottlenecks stride in the 1x1 conv (see above)."""
    return any(b.conv1.stride != (1, 1) for b in _bottleneck_stage_heads(module))


def _add_conv_bias(module: nn.Module) -> None:
    """Give every bias-free ``nn.Conv2d`` a zero-initialized bias (for a backbone with no norm)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and m.bias is None:
            m.bias = nn.Parameter(torch.zeros(m.out_channels, dtype=m.weight.dtype))


def build_resnet(depth: int, name: str, groups: int, stride_in_1x1: bool) -> resnet.ResNet:
    """Random-init torchvision ResNet of ``depth`` with norm ``name`` (no norm: Identity + bias)."""
    layer = norm_layer(name, groups=groups)
    body = DEPTHS[depth](weights=None, norm_layer=layer if layer is not None else nn.Identity)
    if layer is None:
        _add_conv_bias(body)
    if stride_in_1x1:
        set_stride_in_1x1(body, True)
    return finalize_component(body, name)


def freeze_stage_norms(body: nn.Module, trainable_layers: int) -> None:
    """Frozen stages get FrozenBN instead of BN: frozen is a layer, not a mode."""
    for stage in _STAGES[trainable_layers:]:
        names = ("bn1",) if stage == "stem" else (stage,)
        for name in names:
            setattr(body, name, convert_frozen_bn(getattr(body, name)))


def fpn_backbone(body: resnet.ResNet, trainable: int, layer: Any, channels: int) -> BackboneWithFPN:
    """torchvision's ResNet-FPN (C2-C5 -> P2-P6, same module names), ``channels`` wide.

    The ``trainable`` top stages keep ``requires_grad``, as in torchvision's extractor.
    """
    train = ("layer4", "layer3", "layer2", "layer1", "conv1", "bn1")[: trainable + (trainable == 5)]
    for name, param in body.named_parameters():
        if not name.startswith(train):
            param.requires_grad_(False)
    c2 = body.inplanes // 8  # 64 for 18/34, 256 for 50/101
    return BackboneWithFPN(
        body,
        {f"layer{k}": str(k - 1) for k in (1, 2, 3, 4)},
        [c2, c2 * 2, c2 * 4, c2 * 8],
        channels,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=layer,
    )
