"""A narrow CIFAR-style ResNet for small images, with any detnorm norm.

Torchvision's BasicBlock with the small-image layout of He et al.'s CIFAR ResNets: a 3x3 stem
convolution at stride ``stem_stride`` (no max-pool), then ``len(blocks)`` stages of ``blocks[i]``
blocks, ``width * 2**i`` wide, each after the first at stride 2 (the classification sweep: 3
stages of 1 block, width 16: 16/32/64 channels at 32/16/8 px for a 32 px input). All norm layers come from
:func:`detnorm.layers.norm.build_with_norm` (``gn_ws`` also standardizes the convolutions), so BN and
GN are the project's. Used by the classification batch sweep (``--width`` of
``tools/pretrain_backbone.py``); its state_dict is not a torchvision ResNet's, so it does not load
as a detection backbone.
"""

from __future__ import annotations

import functools

from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1, conv3x3

from detnorm.layers.norm import NormLayer, build_with_norm

__all__ = ["build_narrow_resnet"]


class NarrowResNet(nn.Module):
    def __init__(self, norm_layer: NormLayer | None, *, width: int, blocks: tuple[int, ...],
                 num_classes: int, stem_stride: int):  # fmt: skip
        super().__init__()
        norm = norm_layer if norm_layer is not None else nn.Identity
        self.conv1 = conv3x3(3, width, stem_stride)
        self.bn1, self.relu = norm(width), nn.ReLU(inplace=True)
        stages, inplanes = [], width
        for i, n in enumerate(blocks):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            down = None
            if stride != 1 or inplanes != planes:
                down = nn.Sequential(conv1x1(inplanes, planes, stride), norm(planes))
            layer = [BasicBlock(inplanes, planes, stride, down, norm_layer=norm)]
            layer += [BasicBlock(planes, planes, norm_layer=norm) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layer))
            inplanes = planes
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last norm of each residual branch (as torchvision)
            if isinstance(m, BasicBlock) and getattr(m.bn2, "weight", None) is not None:
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x):
        x = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def build_narrow_resnet(width: int, norm: str, groups: int, num_classes: int, *,
                        blocks: tuple[int, ...] = (1, 1, 1), stem_stride: int = 1) -> nn.Module:  # fmt: skip
    """A :class:`NarrowResNet` with norm ``norm`` (``groups`` for gn / gn_ws).

    Raises ``ConfigError`` (key ``gn_groups``) when ``groups`` does not divide ``width``."""
    build = functools.partial(NarrowResNet, width=width, blocks=tuple(blocks),
                              num_classes=num_classes, stem_stride=stem_stride)  # fmt: skip
    return build_with_norm(norm, build, groups=groups)
