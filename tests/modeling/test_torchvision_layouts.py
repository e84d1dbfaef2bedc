"""torchvision's published Mask R-CNN layouts: ``build_maskrcnn`` matches their checkpoints key
for key and, loaded with the same weights, gives the same outputs."""

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

from detnorm.modeling.maskrcnn import TORCHVISION_LAYOUTS, build_maskrcnn
from detnorm.weights.load import load_weights


def _randomize_stats(model):
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, FrozenBatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    return model


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _eval_outputs(model):
    torch.manual_seed(0)
    with torch.no_grad():
        return model.eval()([torch.rand(3, 60, 76)])[0]


def _assert_same_outputs(a, b):
    assert a.keys() == b.keys() and len(a["boxes"]) > 0
    for key in a:
        assert torch.equal(a[key], b[key]), key


# small RPN/RoI budgets; random weights: keep low-score detections
TV_SMALL = dict(min_size=64, max_size=96, rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
                rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, box_batch_size_per_image=32,
                box_detections_per_img=10, box_score_thresh=0.0)  # fmt: skip


def test_torchvision_v1_layout_loads_strictly_with_identical_outputs(tmp_path):
    tv = _randomize_stats(maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **TV_SMALL))
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    # torchvision's layout of its published (COCO_V1) weights: the backbone uses FrozenBN.
    tv_frozen = MaskRCNN(
        _resnet_fpn_extractor(resnet.resnet50(norm_layer=FrozenBatchNorm2d), 3),
        num_classes=91,
        **TV_SMALL,
    )
    tv_frozen.load_state_dict(tv.state_dict())
    ours = build_maskrcnn(
        num_classes=91, **TORCHVISION_LAYOUTS["maskrcnn_resnet50_fpn"], **TV_SMALL
    )
    assert _shapes(ours) == _shapes(tv_frozen)
    tv_keys = {k for k in _shapes(tv) if not k.endswith("num_batches_tracked")}
    assert set(_shapes(ours)) == tv_keys
    report = load_weights(ours, tmp_path / "tv.pth", logger=lambda s: None)
    assert report.format == "torchvision_maskrcnn" and not report.missing and not report.unexpected
    _assert_same_outputs(_eval_outputs(ours), _eval_outputs(tv_frozen))


def test_torchvision_v2_layout_loads_strictly_with_identical_outputs(tmp_path):
    tv = _randomize_stats(maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, **TV_SMALL))
    torch.save(tv.state_dict(), tmp_path / "tv2.pth")
    ours = build_maskrcnn(
        num_classes=91, **TORCHVISION_LAYOUTS["maskrcnn_resnet50_fpn_v2"], **TV_SMALL
    )
    assert _shapes(ours) == _shapes(tv)
    report = load_weights(ours, tmp_path / "tv2.pth", logger=lambda s: None)
    assert report.loaded == len(tv.state_dict())
    _assert_same_outputs(_eval_outputs(ours), _eval_outputs(tv))
