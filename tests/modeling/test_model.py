"""build_maskrcnn: norms per component, the bias rule, training passes, freezing, errors."""

import pytest
import torch
from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, TwoMLPHead
from torchvision.ops.misc import FrozenBatchNorm2d

from detnorm.errors import ConfigError
from detnorm.layers.norm import NORM_NAMES
from detnorm.layers.sync_bn import SyncBatchNorm
from detnorm.layers.ws_conv import WSConv2d
from detnorm.modeling.backbone import build_resnet
from detnorm.modeling.maskrcnn import (
    build_maskrcnn,
    resolve_norms,
)

# Small RPN/RoI budgets keep every pass well under a second on CPU.
SMALL = dict(
    min_size=64,
    max_size=96,
    rpn_pre_nms_top_n_train=100,
    rpn_post_nms_top_n_train=50,
    rpn_pre_nms_top_n_test=50,
    rpn_post_nms_top_n_test=20,
    box_batch_size_per_image=32,
    box_detections_per_img=10,
)
COMPONENTS = ("backbone", "fpn", "box_head", "mask_head")
NORM_TYPES = (nn.BatchNorm2d, FrozenBatchNorm2d, nn.GroupNorm)


def components(model):
    return {
        "backbone": model.backbone.body,
        "fpn": model.backbone.fpn,
        "box_head": model.roi_heads.box_head,
        "mask_head": model.roi_heads.mask_head,
    }


def norms_in(module):
    return [m for m in module.modules() if isinstance(m, NORM_TYPES)]


def check_norm(module, name, groups):
    """Every norm layer of ``module`` is exactly what ``name`` means (independent table)."""
    found = norms_in(module)
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    ws = [isinstance(c, WSConv2d) for c in convs]
    assert all(ws) if name == "gn_ws" else not any(ws)
    if name == "none":
        assert found == []
        return
    assert found
    for m in found:
        if name == "bn":
            assert type(m) is nn.BatchNorm2d
        elif name == "sync_bn":
            assert type(m) is SyncBatchNorm
        elif name == "frozen_bn":
            assert type(m) is FrozenBatchNorm2d and not list(m.parameters())
        else:
            assert type(m) is nn.GroupNorm and m.affine
            expected = {"gn": groups, "gn_ws": groups, "ln": 1, "in": m.num_channels}[name]
            assert m.num_groups == expected


@pytest.mark.parametrize("shift", range(len(NORM_NAMES)))
def test_every_component_gets_its_norm(shift):
    # 8 models, each with 4 different norms; together every (component, norm) pair.
    wanted = {c: NORM_NAMES[(shift + 2 * i) % len(NORM_NAMES)] for i, c in enumerate(COMPONENTS)}
    model = build_maskrcnn(
        num_classes=3, depth=18, gn_groups=16, **{f"{c}_norm": n for c, n in wanted.items()}
    )
    for comp, module in components(model).items():
        check_norm(module, wanted[comp], groups=16)
    assert norms_in(model.rpn) == []
    assert not any(isinstance(m, WSConv2d) for m in model.rpn.modules())
    box = model.roi_heads.box_head
    assert isinstance(box, TwoMLPHead if wanted["box_head"] == "none" else FastRCNNConvFCHead)


def test_gn_ws_model_standardizes_every_component_conv():
    """build_with_norm is the one step at every call site: with a model-wide gn_ws every conv
    of the body, FPN, box head and mask head is a WSConv2d; the RPN and predictors are not."""
    model = build_maskrcnn(num_classes=3, depth=18, norm="gn_ws", gn_groups=16, fpn_channels=32)
    assert isinstance(model.roi_heads.box_head, FastRCNNConvFCHead)
    for comp, module in components(model).items():
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(type(c) is WSConv2d for c in convs), comp
        check_norm(module, "gn_ws", groups=16)
    for part in (model.rpn, model.roi_heads.box_predictor, model.roi_heads.mask_predictor):
        assert not any(isinstance(m, WSConv2d) for m in part.modules())
    # the backbone is still torchvision's BackboneWithFPN (same names and forward)
    assert isinstance(model.backbone, BackboneWithFPN)
    assert type(build_resnet(18, "gn_ws", 16).conv1) is WSConv2d


def test_resolve_norms_overrides_and_errors():
    assert resolve_norms("gn", fpn_norm="none") == {
        "backbone": "gn",
        "fpn": "none",
        "box_head": "gn",
        "mask_head": "gn",
    }
    # a model-wide frozen_bn freezes the backbone only; a component may still ask for it
    assert resolve_norms("frozen_bn") == {
        "backbone": "frozen_bn",
        "fpn": "none",
        "box_head": "none",
        "mask_head": "none",
    }
    assert resolve_norms("frozen_bn", fpn_norm="frozen_bn")["fpn"] == "frozen_bn"
    assert resolve_norms("gn", backbone_norm="frozen_bn")["backbone"] == "frozen_bn"
    for kwargs, key in (
        ({"mask_head_norm": "group"}, "mask_head_norm"),
        ({"backbone_norm": "BN"}, "backbone_norm"),
        ({"fpn_norm": "gs"}, "fpn_norm"),
        ({"box_head_norm": "x"}, "box_head_norm"),
    ):
        with pytest.raises(ConfigError) as err:
            resolve_norms("gn", **kwargs)
        assert err.value.key == key
        assert err.value.message.startswith(f"unknown norm {next(iter(kwargs.values()))!r}; ")
        assert "valid names are none, bn, frozen_bn" in err.value.message
    with pytest.raises(ConfigError, match="norm: unknown norm 'BN'") as err:
        build_maskrcnn(num_classes=3, depth=18, norm="BN")
    assert err.value.key == "norm"


@pytest.mark.parametrize(
    "kwargs, key, match",
    [
        (dict(depth=20), "depth", "must be one of 18, 34, 50, 101, got 20"),
        (dict(box_head="3fc"), "box_head", "must be one of 2fc, 4conv1fc, got '3fc'"),
        (dict(norm="gn", box_head="2fc"), "box_head", "'2fc' has no convolution to normalize"),
        (dict(trainable_backbone_layers=6), "trainable_backbone_layers", r"integer in \[0, 5\]"),
        (dict(trainable_backbone_layers=-1), "trainable_backbone_layers", "got -1"),
        (dict(input_format="bgr"), "input_format", "unknown value 'bgr'; allowed: rgb, caffe2"),
        (dict(stride_in_1x1=True), "stride_in_1x1", "needs depth 50 or 101"),
        (dict(num_classes=1), "num_classes", "must be an integer >= 2, got 1"),
        (dict(gn_groups=0), "gn_groups", "must be an integer >= 1, got 0"),
        (dict(rpn_conv_depth=0), "model_kwargs.rpn_conv_depth", "integer >= 1"),
        (
            dict(norm="gn", gn_groups=48),
            "gn_groups",
            "64 channels are not divisible by 48 groups; choose a group count that divides "
            r"every channel width \(e.g. 32, 16, 8, 1\)",
        ),
        (dict(fpn_norm="gn", gn_groups=24), "gn_groups", "not divisible by 24 groups"),
        (dict(anchor_sizes=(8, 16)), "model_kwargs.anchor_sizes", "must be 5 positive integers"),
        (dict(anchor_sizes=[8, 16, 0, 64, 128]), "model_kwargs.anchor_sizes", "must be 5"),
        (dict(fpn_channels=0), "model_kwargs.fpn_channels", "must be an integer >= 1"),
        (dict(box_fc_dim=0), "model_kwargs.box_fc_dim", "must be an integer >= 1"),
        (
            dict(box_predictor=nn.Identity()),
            "model_kwargs.box_predictor",
            "built by build_maskrcnn",
        ),
    ],
)
def test_invalid_arguments(kwargs, key, match):
    """Each bad argument raises ConfigError at its source with the config key; the message
    says what is wrong without repeating the key."""
    kwargs = {"num_classes": 3, "depth": 18, **kwargs}
    with pytest.raises(ConfigError, match=match) as err:
        build_maskrcnn(**kwargs)
    assert err.value.key == key
    assert not err.value.message.startswith(key.split(".")[-1]), err.value.message
    assert str(err.value) == f"{key}: {err.value.message}"


def targets_for(kind):
    if kind == "empty":
        return [
            {
                "boxes": torch.zeros(0, 4),
                "labels": torch.zeros(0, dtype=torch.int64),
                "masks": torch.zeros(0, 64, 80, dtype=torch.uint8),
            }
        ]
    masks = torch.zeros(2, 64, 80, dtype=torch.uint8)
    masks[0, 8:40, 10:50] = 1
    masks[1, 30:60, 40:76] = 1
    boxes = torch.tensor([[10.0, 8.0, 50.0, 40.0], [40.0, 30.0, 76.0, 60.0]])
    return [{"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks}]


def execution_order(model, images, targets):
    """Leaf modules in the order they ran, and the training losses."""
    order, hooks = [], []
    for m in model.modules():
        if not list(m.children()):
            hooks.append(m.register_forward_hook(lambda mod, i, o: order.append(mod)))
    try:
        losses = model(images, targets)
    finally:
        for h in hooks:
            h.remove()
    return order, losses


@pytest.mark.parametrize("name", NORM_NAMES)
def test_forward_backward_and_bias_rule(name):
    model = build_maskrcnn(num_classes=3, depth=18, norm=name, gn_groups=16, **SMALL).train()
    images = [torch.rand(3, 64, 80)]
    order, losses = execution_order(model, images, targets_for("full"))
    assert set(losses) == {
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
        "loss_objectness",
        "loss_rpn_box_reg",
    }
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    # The bias rule, from what actually runs: a conv whose next module is a norm has no bias.
    convs = 0
    for mod, nxt in zip(order, order[1:] + [None], strict=True):
        if isinstance(mod, nn.Conv2d):
            convs += 1
            assert (mod.bias is None) == isinstance(nxt, NORM_TYPES), (name, mod, nxt)
    assert convs > 20
    model.zero_grad()
    losses = model(images, targets_for("empty"))
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_sync_bn_without_process_group_is_bn():
    torch.manual_seed(1)
    bn = build_maskrcnn(num_classes=3, depth=18, norm="bn", **SMALL).train()
    sync = build_maskrcnn(num_classes=3, depth=18, norm="sync_bn", **SMALL).train()
    sync.load_state_dict(bn.state_dict())
    out = []
    for model in (bn, sync):
        torch.manual_seed(2)  # same RPN/RoI sampling
        out.append(model([torch.rand(3, 64, 80)], targets_for("full")))
    for key in out[0]:
        torch.testing.assert_close(out[0][key], out[1][key], rtol=1e-5, atol=1e-6)


def test_narrow_model_and_anchor_sizes():
    """fpn_channels narrows the FPN, RPN and both heads; box_fc_dim the box fcs; anchor_sizes
    sets one size per level. The defaults are torchvision's widths and anchors."""
    wide = build_maskrcnn(num_classes=3, depth=18, norm="gn")
    assert wide.backbone.out_channels == 256
    assert wide.rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,), (512,))
    model = build_maskrcnn(num_classes=3, depth=18, norm="gn", fpn_channels=64, box_fc_dim=128,
                           anchor_sizes=[8, 16, 32, 64, 128])  # fmt: skip
    assert model.backbone.out_channels == 64
    assert model.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))
    assert model.rpn.head.conv[0][0].in_channels == 64
    assert [m for m in model.roi_heads.box_head.modules() if isinstance(m, nn.Linear)][
        -1
    ].out_features == 128
    assert model.roi_heads.box_predictor.cls_score.in_features == 128
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    assert model.roi_heads.mask_head[0][0].in_channels == 64
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 3
    assert all(m.num_channels == 64 for m in model.roi_heads.mask_head.modules()
               if isinstance(m, nn.GroupNorm))  # fmt: skip
    n = sum(p.numel() for p in model.parameters())
    assert n < sum(p.numel() for p in wide.parameters()) / 2
    model.train()
    losses = model([torch.rand(3, 64, 80)], targets_for("two"))
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 80)])
    assert out[0]["masks"].shape[1:] == (1, 64, 80)
