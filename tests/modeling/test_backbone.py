"""The ResNet body: the one freeze function (requires_grad off and FrozenBN in frozen stages) and
the stride placement of MSRA's Caffe2 ResNets."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet
from torchvision.ops.misc import FrozenBatchNorm2d

from detnorm.errors import ConfigError
from detnorm.layers.sync_bn import SyncBatchNorm
from detnorm.modeling.backbone import build_resnet, freeze
from detnorm.modeling.maskrcnn import build_maskrcnn, get_stride_in_1x1, set_stride_in_1x1


def norms_in(module):
    return [
        m
        for m in module.modules()
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d, nn.GroupNorm))
    ]


@pytest.mark.parametrize("trainable", [0, 2, 3, 5, None])
def test_trainable_layers_freeze_and_frozen_bn(trainable):
    model = build_maskrcnn(num_classes=3, depth=18, norm="bn", trainable_backbone_layers=trainable)
    body = model.backbone.body
    n = 5 if trainable is None else trainable
    training = {
        0: set(),
        2: {"layer3", "layer4"},
        3: {"layer2", "layer3", "layer4"},
        5: {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"},
    }[n]
    for name, child in body.named_children():
        params = list(child.parameters())
        if name in training:
            assert params and all(p.requires_grad for p in params), name
            assert all(type(m) is nn.BatchNorm2d for m in norms_in(child)), name
        else:
            assert all(not p.requires_grad for p in params), name
            assert all(type(m) is FrozenBatchNorm2d for m in norms_in(child)), name
    assert all(p.requires_grad for p in model.backbone.fpn.parameters())
    assert all(p.requires_grad for p in model.roi_heads.parameters())


@pytest.mark.parametrize("trainable", [0, 1, 4, 5])
def test_freeze_is_the_one_freeze(trainable):
    """freeze() on a bare ResNet does what build_maskrcnn's trainable_backbone_layers does."""
    body = freeze(build_resnet(18, "sync_bn", 32), trainable)
    frozen = {0: ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"),
              1: ("conv1", "bn1", "layer1", "layer2", "layer3"),
              4: ("conv1", "bn1"), 5: ()}[trainable]  # fmt: skip
    for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"):
        child = getattr(body, name)
        grads = {p.requires_grad for p in child.parameters()}
        norms = {type(m) for m in norms_in(child)}
        if name in frozen:
            assert grads <= {False} and norms <= {FrozenBatchNorm2d}, name
        else:
            assert grads == {True} and norms <= {SyncBatchNorm}, name
    with pytest.raises(ConfigError) as err:
        freeze(body, 6)
    assert err.value.key == "trainable_backbone_layers"


def test_stride_in_1x1_moves_the_stride_only():
    net = resnet.resnet50(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    block = net.layer2[0]
    before = net(x)
    assert not get_stride_in_1x1(net)
    assert set_stride_in_1x1(net, True) and get_stride_in_1x1(net)
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert net.layer1[0].conv1.stride == (1, 1)  # stage 1 has no stride to move
    assert net(x).shape == before.shape
    feat = torch.randn(1, 256, 16, 16)
    # A strided 1x1 conv is the unstrided one subsampled.
    reference = F.conv2d(feat, block.conv1.weight)[..., ::2, ::2]
    torch.testing.assert_close(block.conv1(feat), reference)
    assert set_stride_in_1x1(net, False) and not get_stride_in_1x1(net)
    torch.testing.assert_close(net(x), before)
