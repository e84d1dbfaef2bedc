"""Wrapped and prefixed checkpoints: a model found under one key prefix loads, several refuse."""

from __future__ import annotations

import pytest
import torch
from helpers.weights_helpers import QUIET, randomize
from torchvision.models import resnet18

from detnorm.modeling.maskrcnn import build_maskrcnn
from detnorm.weights.load import load_weights
from detnorm.weights.prefixes import candidate_prefixes, flatten
from detnorm.weights.safe_load import WeightsError


def resnet_state(seed: int) -> dict:
    return randomize(resnet18(), seed).state_dict()


def target():
    return build_maskrcnn(num_classes=3, depth=18, norm="frozen_bn")


def assert_body_is(model, state: dict) -> None:
    body = model.backbone.body.state_dict()
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer4.1.bn2.running_var"):
        assert torch.equal(body[key], state[key]), key


def test_flatten_and_candidates():
    t = torch.zeros(1)
    flat = flatten({"a": {"b": t, "c": {"d": t}}, "n": 3, "e": [t]})
    assert list(flat) == ["a.b", "a.c.d"]
    keys = ["x.conv1.weight", "x.layer1.0.conv1.weight", "y.conv1.weight", "xconv1.weight"]
    assert candidate_prefixes(keys, ("conv1.weight", "layer1.0.conv1.weight")) == ["x."]


def test_data_parallel_wrapped_resnet(tmp_path):
    state = resnet_state(1)
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "dp.pth")
    model = target()
    report = load_weights(model, tmp_path / "dp.pth", **QUIET)
    assert report.format == "torchvision_resnet" and report.target == "backbone.body"
    assert_body_is(model, state)


def test_nested_two_levels_beside_optimizer_state(tmp_path):
    state = resnet_state(2)
    saved = {
        "epoch": 7,
        "state_dict": {f"module.encoder.{k}": v for k, v in state.items()},
        "optimizer": {"state": {0: {"momentum_buffer": torch.ones(3)}}, "param_groups": []},
    }
    torch.save(saved, tmp_path / "nested.pth")
    model = target()
    logged = []
    report = load_weights(model, tmp_path / "nested.pth", logger=logged.append)
    assert report.key_prefix == "state_dict.module.encoder."
    assert set(report.ignored) == {"optimizer.state.0.momentum_buffer", "fc.weight", "fc.bias"}
    assert "'state_dict.module.encoder.'" in logged[0]
    assert_body_is(model, state)


def test_extra_projection_head_beside_the_backbone(tmp_path):
    state = resnet_state(3)
    saved = {f"model.backbone.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    saved.update(
        {"model.head.0.weight": torch.randn(128, 512), "model.head.0.bias": torch.zeros(128)}
    )
    torch.save({"state_dict": saved}, tmp_path / "ssl.pth")
    model = target()
    report = load_weights(model, tmp_path / "ssl.pth", **QUIET)
    assert report.key_prefix == "state_dict.model.backbone."
    assert set(report.ignored) == {"state_dict.model.head.0.weight", "state_dict.model.head.0.bias"}
    assert not report.missing and not report.unexpected
    assert_body_is(model, state)


def test_whole_mask_rcnn_under_a_prefix_with_an_extra_head(tmp_path):
    torch.manual_seed(0)
    source = randomize(target(), 4).eval()
    saved = {f"detector.{k}": v for k, v in source.state_dict().items()}
    saved["aux_head.weight"] = torch.randn(4, 4)
    torch.save({"model": saved, "iteration": 9}, tmp_path / "det.pth")
    model = target().eval()
    report = load_weights(model, tmp_path / "det.pth", **QUIET)
    assert report.format == "torchvision_maskrcnn" and report.key_prefix == "model.detector."
    assert report.ignored == ["model.aux_head.weight"]
    image = [torch.rand(3, 64, 80)]
    with torch.no_grad():
        for a, b in zip(source(image), model(image), strict=True):
            assert all(torch.equal(a[k], b[k]) for k in a)


def test_ambiguous_prefixes_are_listed_and_the_flag_chooses(tmp_path):
    model_state, ema_state = resnet_state(5), resnet_state(6)
    saved = {**{f"model.{k}": v for k, v in model_state.items()},
             **{f"ema.{k}": v for k, v in ema_state.items()}}  # fmt: skip
    torch.save(saved, tmp_path / "ema.pth")
    with pytest.raises(WeightsError) as err:
        load_weights(target(), tmp_path / "ema.pth", **QUIET)
    message = str(err.value)
    assert "\n" not in message and "'ema.', 'model.'" in message
    assert "ema.pth" in message and "--pretrained-prefix" in message
    model = target()
    assert load_weights(model, tmp_path / "ema.pth", prefix="ema.", **QUIET).key_prefix == "ema."
    assert_body_is(model, ema_state)
    with pytest.raises(WeightsError, match=r"prefix 'modle\.' holds no complete .*'ema\.'"):
        load_weights(target(), tmp_path / "ema.pth", prefix="modle.", **QUIET)


def test_nothing_complete_is_unrecognized(tmp_path):
    state = resnet_state(7)
    partial = {f"enc.{k}": v for k, v in state.items() if not k.startswith("layer4.")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match="partial.pth: unrecognized state_dict.*no complete"):
        load_weights(target(), tmp_path / "partial.pth", **QUIET)


def test_train_cli_passes_the_prefix(tmp_path):
    from detnorm.cli.train import parse_config

    torch.save({"a": torch.zeros(1)}, tmp_path / "w.pth")
    cfg = parse_config(["--pretrained", str(tmp_path / "w.pth"), "--pretrained-prefix", "ema."])
    assert cfg["pretrained_prefix"] == "ema."
