"""Detectron (Caffe2) pickles: name mapping, GN and AffineChannel (BN*) ResNets, refusals."""

import pickle

import numpy as np
import pytest
import torch
from helpers.weights_helpers import QUIET, randomize
from torch import nn
from torchvision.models import resnet
from torchvision.ops.misc import FrozenBatchNorm2d

from detnorm.modeling.maskrcnn import build_maskrcnn, get_stride_in_1x1
from detnorm.weights import caffe2, load_weights
from detnorm.weights.safe_load import WeightsError, detect_format


def resnet_features(net, x):
    """C5 of a torchvision ResNet, computed stage by stage."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


# A few names written out by hand from Detectron's naming scheme.
HAND_TABLE = {
    "conv1_w": ("conv1.weight", False),
    "conv1_gn_s": ("bn1.weight", False),
    "res_conv1_bn_b": ("bn1.bias", True),
    "res2_0_branch1_w": ("layer1.0.downsample.0.weight", False),
    "res2_0_branch1_gn_b": ("layer1.0.downsample.1.bias", False),
    "res3_2_branch2b_gn_s": ("layer2.2.bn2.weight", False),
    "res4_22_branch2c_w": ("layer3.22.conv3.weight", False),
    "res5_1_branch2a_bn_s": ("layer4.1.bn1.weight", True),
    "fc1000_w": None,
    "res2_0_branch2a_w_momentum": None,
}


def test_caffe2_names_hand_table():
    for blob, key in HAND_TABLE.items():
        assert caffe2.torchvision_key(blob) == key, blob


def caffe2_name(key, kind):
    """Inverse mapping written independently: torchvision key -> Detectron blob name."""
    parts = key.split(".")
    suffix = {"weight": "s", "bias": "b"}[parts[-1]]
    if key == "conv1.weight":
        return "conv1_w"
    if parts[0] == "bn1":
        return ("conv1_gn_" if kind == "gn" else "res_conv1_bn_") + suffix
    prefix = f"res{int(parts[0][-1]) + 1}_{parts[1]}_"
    if parts[2] == "downsample":
        branch, is_norm = "branch1", parts[3] == "1"
    else:
        branch, is_norm = "branch2" + "abc"[int(parts[2][-1]) - 1], parts[2].startswith("bn")
    return prefix + branch + (f"_{kind}_{suffix}" if is_norm else "_w")


def write_pickle(path, net, kind):
    blobs = {}
    for key, value in net.state_dict().items():
        if key.startswith("fc.") or "running" in key or "num_batches" in key:
            continue
        blobs[caffe2_name(key, kind)] = value.numpy().copy()
    blobs["fc1000_w"] = np.zeros((1000, 2048), np.float32)
    blobs["fc1000_b"] = np.zeros(1000, np.float32)
    blobs["conv1_w_momentum"] = np.zeros_like(blobs["conv1_w"])
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)
    return blobs


def test_caffe2_gn_pickle(tmp_path):
    gn32 = lambda c: nn.GroupNorm(32, c)  # noqa: E731 - test-local reference network
    net = randomize(resnet.resnet50(weights=None, norm_layer=gn32)).eval()
    write_pickle(tmp_path / "R-50-GN.pkl", net, "gn")
    assert detect_format(tmp_path / "R-50-GN.pkl") == "caffe2"
    model = build_maskrcnn(num_classes=3, depth=50, norm="gn")
    report = load_weights(model, tmp_path / "R-50-GN.pkl", **QUIET)
    assert report.loaded == len(model.backbone.body.state_dict())  # every backbone key mapped
    assert sorted(report.ignored) == ["conv1_w_momentum", "fc1000_b", "fc1000_w"]
    assert report.input_format == model.transform.input_format == "caffe2"
    assert not report.stride_in_1x1
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model.backbone.body.eval()(x)["3"]
        torch.testing.assert_close(ours, resnet_features(net, x))
    for norm in ("bn", "gn_ws"):
        other = build_maskrcnn(num_classes=3, depth=50, norm=norm)
        with pytest.raises(WeightsError, match="R-50-GN.pkl: Detectron GN weights"):
            load_weights(other, tmp_path / "R-50-GN.pkl", **QUIET)


def test_caffe2_affine_channel_pickle(tmp_path):
    net = randomize(resnet.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)).eval()
    write_pickle(tmp_path / "R-50.pkl", net, "bn")
    model = build_maskrcnn(num_classes=3, depth=50, norm="frozen_bn")
    report = load_weights(model, tmp_path / "R-50.pkl", **QUIET)
    assert report.stride_in_1x1 and get_stride_in_1x1(model) and report.input_format == "caffe2"
    # Reference: AffineChannel y = x * s + b exactly, and MSRA's stride in the 1x1 conv.
    for m in net.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.running_mean.zero_(), m.running_var.fill_(1.0)
            m.eps = 0.0
    for layer in (net.layer2, net.layer3, net.layer4):
        layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model.backbone.body.eval()(x)["3"]
        torch.testing.assert_close(ours, resnet_features(net, x))
    gn = build_maskrcnn(num_classes=3, depth=50, norm="gn")
    with pytest.raises(WeightsError, match="BatchNorm-trained weights cannot"):
        load_weights(gn, tmp_path / "R-50.pkl", **QUIET)
