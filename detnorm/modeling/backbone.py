"""The ResNet body of :func:`detnorm.modeling.maskrcnn.build_maskrcnn`, with any norm.

The body is one component built by :func:`detnorm.layers.norm.build_with_norm` (so ``gn_ws``
also standardizes its convolutions). A ResNet without a norm gets conv biases. :func:`freeze`
is the one freeze of the model: frozen stages stop training and their BN becomes FrozenBN
(frozen is a layer, not a mode). The stride helpers move each stage's stride between the 1x1
and the 3x3 conv (MSRA vs torchvision ResNets).
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torchvision.models import resnet

from detnorm.errors import ConfigError, check_int
from detnorm.layers.norm import NormLayer, build_with_norm, convert_frozen_bn

__all__ = [
    "DEPTHS",
    "STAGES",
    "build_resnet",
    "freeze",
    "get_stride_in_1x1",
    "set_stride_in_1x1",
]

DEPTHS = {18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50, 101: resnet.resnet101}
# Stages from the top, as torchvision counts trainable layers, with the modules each one holds.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("layer4", ("layer4",)),
    ("layer3", ("layer3",)),
    ("layer2", ("layer2",)),
    ("layer1", ("layer1",)),
    ("stem", ("conv1", "bn1")),
)


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
        raise ConfigError("stride_in_1x1", "applies to bottleneck ResNets (depth 50 or 101)")
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


def _resnet(norm_layer: NormLayer | None, *, depth: int, stride_in_1x1: bool) -> resnet.ResNet:
    body = DEPTHS[depth](
        weights=None, norm_layer=norm_layer if norm_layer is not None else nn.Identity
    )
    if norm_layer is None:
        _add_conv_bias(body)
    if stride_in_1x1:
        set_stride_in_1x1(body, True)
    return body


def build_resnet(
    depth: int, norm: str, groups: int = 32, stride_in_1x1: bool = False
) -> resnet.ResNet:
    """Random-init torchvision ResNet of ``depth`` with norm ``norm`` (no norm: Identity + bias).

    Raises ``ConfigError`` with key ``"depth"`` for a depth not in :data:`DEPTHS`.
    """
    if depth not in DEPTHS:
        raise ConfigError("depth", f"must be one of {', '.join(map(str, DEPTHS))}, got {depth!r}")
    build = functools.partial(_resnet, depth=depth, stride_in_1x1=stride_in_1x1)
    return build_with_norm(norm, build, groups=groups)


def freeze(body: nn.Module, trainable_layers: int) -> nn.Module:
    """Freeze all but the ``trainable_layers`` (0-5) top stages of a ResNet ``body``, in place.

    Stages count from the top as torchvision's ``trainable_layers`` does (:data:`STAGES`:
    layer4, layer3, layer2, layer1, then the stem conv1 + bn1); 5 trains everything, 0 nothing.
    In a frozen stage every parameter gets ``requires_grad=False`` and every BN (bn or sync_bn)
    becomes FrozenBN with its statistics: frozen is a layer, not a mode. ``body`` is a
    ``resnet.ResNet`` or the ``IntermediateLayerGetter`` of a ``BackboneWithFPN`` (same names).
    Returns ``body``. Raises ``ConfigError`` (key ``"trainable_backbone_layers"``).
    """
    check_int("trainable_backbone_layers", trainable_layers, 0, len(STAGES))
    for _, names in STAGES[trainable_layers:]:
        for name in names:
            module = getattr(body, name)
            for param in module.parameters():
                param.requires_grad_(False)
            setattr(body, name, convert_frozen_bn(module))
    return body
