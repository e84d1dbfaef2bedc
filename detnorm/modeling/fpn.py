"""The FPN of :func:`detnorm.modeling.maskrcnn.build_maskrcnn`: ResNet C2-C5 -> P2-P6.

The FPN is one component built by :func:`detnorm.layers.norm.build_with_norm`, apart from the
ResNet body (which has its own norm), and :class:`ResNetFPN` joins the two with torchvision's
``BackboneWithFPN`` layout: the same attributes, forward and state_dict keys
(``body.*``, ``fpn.*``), so torchvision's Mask R-CNN checkpoints load key for key.
"""

from __future__ import annotations

import functools

from torch import nn
from torchvision.models import resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from detnorm.layers.norm import NormLayer, build_with_norm

__all__ = ["FPN_CHANNELS", "RETURN_LAYERS", "ResNetFPN", "fpn_backbone"]

FPN_CHANNELS = 256  # every published layout
# ResNet stages feeding the FPN, with the names of its inputs (torchvision's).
RETURN_LAYERS = {f"layer{k}": str(k - 1) for k in (1, 2, 3, 4)}


class ResNetFPN(BackboneWithFPN):
    """torchvision's ``BackboneWithFPN`` around an FPN built beforehand.

    ``BackboneWithFPN.__init__`` builds its own FPN with a norm layer but without the norm's
    conv rule; this one takes the FPN component as built by ``build_with_norm``. Attributes
    (``body``, ``fpn``, ``out_channels``), ``forward`` and state_dict keys are the parent's.
    """

    def __init__(self, body: nn.Module, fpn: FeaturePyramidNetwork, out_channels: int):
        nn.Module.__init__(self)  # not BackboneWithFPN.__init__: it would build a second FPN
        self.body = IntermediateLayerGetter(body, return_layers=RETURN_LAYERS)
        self.fpn = fpn
        self.out_channels = out_channels


def _fpn(
    norm_layer: NormLayer | None, *, in_channels_list: list[int], out_channels: int
) -> FeaturePyramidNetwork:
    return FeaturePyramidNetwork(
        in_channels_list=in_channels_list,
        out_channels=out_channels,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=norm_layer,
    )


def fpn_backbone(
    body: resnet.ResNet, *, norm: str, channels: int = FPN_CHANNELS, groups: int = 32
) -> ResNetFPN:
    """torchvision's ResNet-FPN (C2-C5 -> P2-P6, same module names), ``channels`` wide.

    The FPN gets norm ``norm`` (``groups`` for gn/gn_ws) and its conv rule; ``body`` is used as
    it is (freeze it first with :func:`detnorm.modeling.backbone.freeze`).
    """
    c2 = body.inplanes // 8  # 64 for 18/34, 256 for 50/101
    build = functools.partial(
        _fpn, in_channels_list=[c2, c2 * 2, c2 * 4, c2 * 8], out_channels=channels
    )
    fpn = build_with_norm(norm, build, groups=groups)
    return ResNetFPN(body, fpn, channels)
