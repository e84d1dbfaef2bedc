"""tools/pretrain_backbone.py: tiny ImageFolder and synthetic runs whose weights load through
--pretrained into a backbone with the norm they were trained with, and are refused otherwise."""

import json

import pytest
import torch
from helpers.weights_helpers import QUIET
from PIL import Image

from detnorm.cli.pretrain import main
from detnorm.cli.train import main as train_main
from detnorm.engine.pretrain import ShapeClassification
from detnorm.modeling.maskrcnn import build_maskrcnn
from detnorm.weights.load import WeightsError, detect_format, load_weights

TINY = ["--image-size", "32", "--batch-size", "4", "--max-steps", "2", "--num-workers", "0",
        "--checkpoint-period", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagefolder")
    for split in ("train", "val"):
        for k, colour in enumerate(((255, 0, 0), (0, 0, 255))):
            folder = root / split / f"class{k}"
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40 + 4 * i, 36), colour).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def bn_weights(imagefolder, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "bn"
    assert main(["--data", str(imagefolder), "--norm", "bn", *TINY, "--output-dir", str(out)]) == 0
    return out / "backbone.pth"


@pytest.fixture(scope="module")
def gn_weights(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "gn"
    args = ["--synthetic", "--no-clutter", "--norm", "gn", "--num-train", "8", "--num-val", "6",
            *TINY]  # fmt: skip
    assert main([*args, "--output-dir", str(out)]) == 0
    assert "without clutter" in json.loads((out / "backbone.pth.json").read_text())["data"]
    return out / "backbone.pth"


def test_imagefolder_bn_pretraining_writes_torchvision_weights(bn_weights):
    meta = json.loads(bn_weights.with_name("backbone.pth.json").read_text())
    assert meta["norm"] == "bn" and meta["classes"] == ["class0", "class1"] and meta["steps"] == 2
    assert 0.0 <= meta["top1"] <= 100.0
    assert detect_format(bn_weights) == "torchvision_resnet"
    state = torch.load(bn_weights, weights_only=True)
    assert "bn1.running_mean" in state and state["fc.weight"].shape == (2, 512)


@pytest.mark.parametrize("norm", ["bn", "frozen_bn", "sync_bn"])
def test_bn_weights_load_into_bn_like_backbones(bn_weights, norm):
    model = build_maskrcnn(num_classes=3, depth=18, norm=norm)
    report = load_weights(model, bn_weights, **QUIET)
    assert not report.missing and report.loaded > 0
    state = torch.load(bn_weights, weights_only=True)
    assert torch.equal(model.backbone.body.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_synthetic_gn_weights_load_into_gn_only(gn_weights):
    meta = json.loads(gn_weights.with_name("backbone.pth.json").read_text())
    assert (meta["norm"], meta["gn_groups"], meta["classes"][0]) == ("gn", 32, "circle")
    state = torch.load(gn_weights, weights_only=True)
    assert not any(k.endswith("running_mean") for k in state)
    model = build_maskrcnn(num_classes=3, depth=18, norm="gn")
    load_weights(model, gn_weights, **QUIET)
    assert torch.equal(model.backbone.body.bn1.weight, state["bn1.weight"])
    for norm, groups, match in [("frozen_bn", 32, "pretrained with gn"), ("bn", 32, "backbone-norm gn"),
                                ("gn", 8, "GroupNorm\\(8, 64\\)"), ("gn_ws", 32, "weight-standardized")]:  # fmt: skip
        with pytest.raises(WeightsError, match=match):
            load_weights(build_maskrcnn(num_classes=3, depth=18, norm=norm, gn_groups=groups),
                         gn_weights, **QUIET)  # fmt: skip


def test_bn_weights_refused_for_gn(bn_weights):
    with pytest.raises(WeightsError, match="BatchNorm-trained weights cannot"):
        load_weights(build_maskrcnn(num_classes=3, depth=18, norm="gn"), bn_weights, **QUIET)


def test_pretrained_flag_of_train_cli_refuses_the_wrong_norm(gn_weights, tmp_path, capsys):
    """The accepted path (GN weights into a GN backbone through --pretrained) runs in
    tests/reproduction/test_study.py; here the refusal exits 2 before any training."""
    from detnorm.data.synthetic import generate_dataset

    data = generate_dataset(tmp_path / "data", num_train=2, num_val=1, image_size=64)
    argv = ["--data", str(data), "--depth", "18", "--pretrained", str(gn_weights),
            "--output-dir", str(tmp_path / "run")]  # fmt: skip
    assert train_main([*argv, "--norm", "frozen_bn"]) == 2
    err = capsys.readouterr().err
    assert f"--pretrained: {gn_weights}: does not fit" in err and "pretrained with gn" in err


def test_shape_classification_is_deterministic_and_balanced():
    ds = ShapeClassification(12, image_size=32, seed=3)
    x, y = ds[7]
    assert x.shape == (3, 32, 32) and float(x.min()) >= 0 and float(x.max()) <= 1 and y == 1
    assert torch.equal(ds[7][0], ShapeClassification(12, image_size=32, seed=3)[7][0])
    assert sorted(ds[i][1] for i in range(12)) == sorted(list(range(6)) * 2)
    assert main(["--synthetic", "--batch-size", "0", "--output-dir", "x"]) == 2
    clean = ShapeClassification(12, image_size=32, seed=3, clutter=False)
    assert clean[7][1] == 1 and not torch.equal(clean[7][0], x)  # same label, clean scene


def test_gn_weights_without_sidecar_fit_any_groupnorm_backbone(gn_weights, tmp_path):
    bare = tmp_path / "bare.pth"
    bare.write_bytes(gn_weights.read_bytes())  # no bare.pth.json: the group count is unknown
    load_weights(build_maskrcnn(num_classes=3, depth=18, norm="ln"), bare, **QUIET)
    with pytest.raises(WeightsError, match="no running statistics"):
        load_weights(build_maskrcnn(num_classes=3, depth=18, norm="bn"), bare, **QUIET)


def test_narrow_cluttered_run_writes_a_curve_and_both_bn_evaluations(tmp_path):
    """The batch sweep's recipe flags: epochs, LR per 32 images, warmup fraction, a val curve,
    and BN evaluated with running (EMA) and PreciseBN statistics; no backbone weights."""
    out = tmp_path / "narrow"
    argv = ["--synthetic", "--task", "cluttered", "--width", "8", "--gn-groups", "4", "--norm", "bn",
            "--image-size", "32", "--num-train", "8", "--num-val", "4", "--batch-size", "2",
            "--epochs", "1", "--lr-reference", "32", "--warmup-fraction", "0.25",
            "--eval-every-epochs", "0.5", "--precise-bn-iters", "2", "--precise-bn-batch", "4",
            "--num-workers", "0", "--checkpoint-period", "100", "--no-weights", "--no-progress-bar",
            "--output-dir", str(out)]  # fmt: skip
    assert main(argv) == 0
    meta = json.loads((out / "pretrain.json").read_text())
    assert (meta["steps"], meta["warmup_steps"], meta["lr"]) == (4, 1, pytest.approx(0.1 * 2 / 32))
    assert [p["epoch"] for p in meta["curve"]] == [0.5, 1.0] and meta["precise_bn_batches"] == 2
    assert meta["val_error"] == pytest.approx(100 - meta["top1"]) and meta["weights"] is None
    assert meta["val_error_precise_bn"] is not None and not list(out.glob("*.pth"))
    assert main([*argv[:-1], str(tmp_path / "bad"), "--warmup-fraction", "1"]) == 2
