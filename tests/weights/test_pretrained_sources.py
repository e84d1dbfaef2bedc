"""``--pretrained none|imagenet|coco|coco_v2|URL|PATH`` from the training command line."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import yaml
from helpers.weights_helpers import randomize
from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights, maskrcnn_resnet50_fpn

from detnorm.cli.train import main as train_main
from detnorm.config import DEFAULTS, ConfigError, merge, validate
from detnorm.weights.safe_load import torch_load

COCO_URL = MaskRCNN_ResNet50_FPN_Weights.COCO_V1.url


def test_config_accepts_what_load_weights_accepts(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"")
    for source in ("none", "imagenet", "coco", "coco_v2", "https://example.org/r50.pth",
                   str(tmp_path / "w.pth")):  # fmt: skip
        validate(merge(DEFAULTS, {"pretrained": source}))
    with pytest.raises(ConfigError) as err:
        validate(merge(DEFAULTS, {"pretrained": "cocoo"}))
    assert err.value.key == "pretrained"
    assert err.value.message == (
        "got 'cocoo'; allowed: none, imagenet, coco, coco_v2, an http(s) URL, "
        "or an existing weights file"
    )


@pytest.fixture()
def tiny_run(tmp_path):
    """A 1-step R-50 run on 64 px images of a 1+1 image generated dataset."""
    from detnorm.data.synthetic import generate_dataset

    data = generate_dataset(tmp_path / "data", num_train=1, num_val=1, image_size=(64, 64))
    config = {
        "depth": 50, "max_steps": 1, "batch_size": 1, "train_scales": [64], "max_size": 64,
        "test_size": 64, "num_workers": 0, "accelerator": "cpu", "precise_bn": False,
        "data": str(data),
        "model_kwargs": {"rpn_pre_nms_top_n_test": 20, "rpn_post_nms_top_n_test": 10,
                         "box_detections_per_img": 5},
    }  # fmt: skip
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return ["--config", str(path), "--output-dir", str(tmp_path / "run")]


def test_coco_offline_names_the_url_and_the_cache_path(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert train_main([*tiny_run, "--pretrained", "coco"]) == 2
    err = capsys.readouterr().err.strip()
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / Path(COCO_URL).name
    assert len(err.splitlines()) == 1, err
    assert err.startswith("detnorm-train: error: --pretrained: coco: could not download")
    assert COCO_URL in err and str(cached) in err


def test_coco_file_placed_at_the_cache_path_loads(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / Path(COCO_URL).name
    cached.parent.mkdir(parents=True)
    source = randomize(maskrcnn_resnet50_fpn(weights=None, weights_backbone=None), 3)
    torch.save(source.state_dict(), cached)

    def no_network(*args, **kwargs):
        raise AssertionError("the cached file must be used")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    assert train_main([*tiny_run, "--pretrained", "coco"]) == 0
    out = capsys.readouterr().out
    assert f"from {cached} (torchvision_maskrcnn) into model" in out
    assert "reinitialized: roi_heads.box_predictor.cls_score" in out  # 91 COCO classes -> 6
    ckpt = torch_load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    # the stem and layer1 are frozen when fine-tuning: they still hold the file's values
    for key in ("backbone.body.conv1.weight", "backbone.body.layer1.0.conv2.weight"):
        assert torch.equal(ckpt["state_dict"][f"model.{key}"], source.state_dict()[key])
