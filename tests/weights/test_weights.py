"""load_weights: every checkpoint format, built here from random models (never downloaded)."""

import urllib.error

import pytest
import torch
from helpers.weights_helpers import QUIET, randomize
from torchvision.models import resnet
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d

from detnorm.modeling.maskrcnn import build_maskrcnn
from detnorm.weights import load_weights
from detnorm.weights.safe_load import WeightsError, detect_format

SMALL = dict(min_size=64, max_size=96, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
             box_detections_per_img=10, box_score_thresh=0.0)  # fmt: skip


@pytest.fixture
def resnet18_file(tmp_path):
    net = randomize(resnet.resnet18(weights=None))
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(net.state_dict(), path)
    return net.eval(), path


def features(model, x):
    return model.backbone.body.eval()(x)["3"]


@pytest.mark.parametrize("backbone_norm", ["frozen_bn", "bn", "sync_bn"])
def test_imagenet_resnet_into_bn_like_backbones(resnet18_file, backbone_norm):
    net, path = resnet18_file
    assert detect_format(path) == "torchvision_resnet"
    model = build_maskrcnn(num_classes=3, depth=18, norm="gn", backbone_norm=backbone_norm)
    report = load_weights(model, path, **QUIET)
    assert report.target == "backbone.body" and report.input_format == "rgb"
    assert sorted(report.ignored) == ["fc.bias", "fc.weight"]
    assert not report.missing and not report.unexpected
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = net.layer4(
            net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x)))))))
        )
        torch.testing.assert_close(features(model, x), reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backbone_norm", ["gn", "gn_ws", "ln", "in", "none"])
def test_imagenet_bn_weights_refused_for_other_norms(resnet18_file, backbone_norm):
    _, path = resnet18_file
    model = build_maskrcnn(num_classes=3, depth=18, norm="none", backbone_norm=backbone_norm)
    with pytest.raises(WeightsError, match="BatchNorm-trained weights cannot") as err:
        load_weights(model, path, **QUIET)
    assert str(path) in str(err.value) and "--pretrained none" in str(err.value)
    assert "R-50-GN.pkl" in str(err.value)


def test_strict_errors_list_keys_and_change_nothing(resnet18_file, tmp_path):
    net, _ = resnet18_file
    state = net.state_dict()
    del state["layer1.0.conv1.weight"]
    state["layer9.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    model = build_maskrcnn(num_classes=3, depth=18, norm="frozen_bn")
    before = model.backbone.body.layer2[0].conv1.weight.clone()
    with pytest.raises(WeightsError) as err:
        load_weights(model, path, **QUIET)
    message = str(err.value)
    assert str(path) in message and "missing: layer1.0.conv1.weight" in message
    assert "unexpected: layer9.weight" in message
    assert torch.equal(model.backbone.body.layer2[0].conv1.weight, before)
    report = load_weights(model, path, strict=False, **QUIET)
    assert report.missing == ["layer1.0.conv1.weight"] and report.unexpected == ["layer9.weight"]
    assert torch.equal(model.backbone.body.layer2[0].conv1.weight, net.layer2[0].conv1.weight)


def test_wrong_depth_is_a_shape_mismatch(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(resnet.resnet34(weights=None).state_dict(), path)
    model = build_maskrcnn(num_classes=3, depth=18, norm="frozen_bn")
    with pytest.raises(WeightsError, match="unexpected: layer1.2"):
        load_weights(model, path, **QUIET)


def torchvision_r18_maskrcnn(num_classes):
    """torchvision's v1 layout (FrozenBN body, 2fc, no FPN/head norm) on an R-18."""
    body = resnet.resnet18(weights=None, norm_layer=FrozenBatchNorm2d)
    randomize(body)  # random body incl. FrozenBN statistics; torchvision's init elsewhere
    return MaskRCNN(_resnet_fpn_extractor(body, 5), num_classes=num_classes, **SMALL)


@pytest.mark.parametrize("wrap", ["plain", "model", "state_dict", "ddp"])
def test_torchvision_maskrcnn_checkpoint(tmp_path, wrap):
    tv = torchvision_r18_maskrcnn(5).eval()
    state = tv.state_dict()
    obj = {
        "plain": state,
        "model": {"model": state, "epoch": 3},
        "state_dict": {"state_dict": state},
        "ddp": {f"module.{k}": v for k, v in state.items()},
    }[wrap]
    torch.save(obj, tmp_path / "coco.pth")
    assert detect_format(tmp_path / "coco.pth") == "torchvision_maskrcnn"
    ours = build_maskrcnn(num_classes=5, depth=18, norm="none", backbone_norm="frozen_bn", **SMALL)
    report = load_weights(ours, tmp_path / "coco.pth", **QUIET)
    assert report.target == "model" and report.loaded == len(state) and not report.reinitialized
    torch.manual_seed(0)
    image = [torch.rand(3, 60, 70)]
    with torch.no_grad():
        a, b = ours.eval()(image)[0], tv(image)[0]
    assert len(a["boxes"]) > 0 and all(torch.equal(a[k], b[k]) for k in a)


def test_other_class_count_reinitializes_predictors(tmp_path):
    tv = torchvision_r18_maskrcnn(91)
    torch.save(tv.state_dict(), tmp_path / "coco91.pth")
    ours = build_maskrcnn(num_classes=4, depth=18, norm="none", backbone_norm="frozen_bn")
    report = load_weights(ours, tmp_path / "coco91.pth", **QUIET)
    assert report.reinitialized == [
        "roi_heads.box_predictor.cls_score",
        "roi_heads.box_predictor.bbox_pred",
        "roi_heads.mask_predictor.mask_fcn_logits",
    ]
    predictor = ours.roi_heads.box_predictor
    assert (
        predictor.cls_score.weight.shape == (4, 1024) and predictor.bbox_pred.bias.abs().sum() == 0
    )
    assert 0.005 < predictor.cls_score.weight.std() < 0.02
    assert torch.equal(ours.roi_heads.box_head.fc6.weight, tv.roi_heads.box_head.fc6.weight)
    assert torch.equal(
        ours.roi_heads.mask_predictor.conv5_mask.weight,
        tv.roi_heads.mask_predictor.conv5_mask.weight,
    )
    with pytest.raises(ValueError, match="num_classes=91 but the model has 4 classes"):
        load_weights(ours, tmp_path / "coco91.pth", num_classes=91, **QUIET)


def test_old_torchvision_keys_and_coco_v1_eps(tmp_path):
    tv = torchvision_r18_maskrcnn(5)
    state = tv.state_dict()
    for t in ("weight", "bias"):
        state[f"rpn.head.conv.{t}"] = state.pop(f"rpn.head.conv.0.0.{t}")
        for i in range(4):
            state[f"roi_heads.mask_head.mask_fcn{i + 1}.{t}"] = state.pop(
                f"roi_heads.mask_head.{i}.0.{t}"
            )
    path = tmp_path / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"  # torchvision's COCO_V1 file name
    torch.save(state, path)
    ours = build_maskrcnn(num_classes=5, depth=18, norm="none", backbone_norm="frozen_bn")
    report = load_weights(ours, path, **QUIET)
    assert "renamed 10 keys" in report.notes[0]
    assert torch.equal(ours.rpn.head.conv[0][0].weight, tv.rpn.head.conv[0][0].weight)
    assert torch.equal(ours.roi_heads.mask_head[3][0].bias, tv.roi_heads.mask_head[3][0].bias)
    assert {m.eps for m in ours.modules() if isinstance(m, FrozenBatchNorm2d)} == {0.0}


def test_detnorm_lightning_checkpoint(tmp_path):
    src = randomize(build_maskrcnn(num_classes=3, depth=18, norm="gn", **SMALL))
    ckpt = {
        "epoch": 2,
        "state_dict": {
            **{f"model.{k}": v for k, v in src.state_dict().items()},
            "ema.step": torch.tensor(1),
        },
        "hyper_parameters": {"input_format": "caffe2", "norm": "gn"},
    }
    torch.save(ckpt, tmp_path / "last.ckpt")
    assert detect_format(tmp_path / "last.ckpt") == "detnorm"
    ours = build_maskrcnn(num_classes=3, depth=18, norm="gn", **SMALL)
    report = load_weights(ours, tmp_path / "last.ckpt", **QUIET)
    assert report.ignored == ["ema.step"] and report.input_format == "caffe2"
    for k, v in src.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    other = build_maskrcnn(num_classes=3, depth=18, norm="bn")
    with pytest.raises(WeightsError, match="last.ckpt does not fit the model"):
        load_weights(other, tmp_path / "last.ckpt", **QUIET)


# ---- sources: files, aliases, URLs ----------------------------------------------------------


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    # what torch.hub.set_dir sets, restored as it was (usually None: $TORCH_HOME decides), so
    # later tests that set TORCH_HOME are not pinned to this test's folder
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "hub"


def test_imagenet_alias_uses_the_cache(hub_dir, resnet18_file):
    _, path = resnet18_file
    model = build_maskrcnn(num_classes=3, depth=18, norm="frozen_bn")
    with pytest.raises(WeightsError) as err:
        load_weights(model, "imagenet", **QUIET)
    cached = hub_dir / "checkpoints" / "resnet18-f37072fd.pth"
    message = str(err.value)
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert str(cached) in message
    cached.write_bytes(path.read_bytes())
    report = load_weights(model, "imagenet", **QUIET)  # no download: it is cached
    assert report.source == str(cached) and report.format == "torchvision_resnet"


def test_unreadable_sources_name_the_file(tmp_path):
    model = build_maskrcnn(num_classes=3, depth=18, norm="frozen_bn")
    with pytest.raises(WeightsError, match="weights file not found: .*nope.pth"):
        load_weights(model, tmp_path / "nope.pth", **QUIET)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.bin"):
        detect_format(junk)
    torch.save({"step": torch.tensor(1)}, tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match="odd.pth: unrecognized state_dict"):
        detect_format(tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match="R-50 Mask R-CNN; the model is R-18"):
        load_weights(model, "coco", **QUIET)
