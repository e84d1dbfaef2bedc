"""tools/predict.py: drawing predictions, input handling, and the CLI on a real checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from detnorm.analysis.visualize import (
    PALETTE,
    collect_images,
    draw_predictions,
    label_text,
    predict_files,
)


def fake_prediction(score, h=60, w=80):
    """One detection: box x 10..50, y 12..42, mask probability 0.9 on x 20..40, y 20..35."""
    masks = torch.zeros(1, 1, h, w)
    masks[0, 0, 20:35, 20:40] = 0.9
    masks[0, 0, 0:5, 0:5] = 0.3  # below the mask threshold: never drawn
    return {
        "boxes": torch.tensor([[10.0, 12.0, 50.0, 42.0]]),
        "labels": torch.tensor([2]),
        "scores": torch.tensor([score]),
        "masks": masks,
    }


def gray_image(h=60, w=80):
    return torch.full((3, h, w), 100, dtype=torch.uint8)


def test_detection_above_threshold_is_drawn():
    image = gray_image()
    out = draw_predictions(
        image, fake_prediction(0.9), ["cat", "dog"], score_threshold=0.5, alpha=0.5
    )
    assert out.shape == image.shape and out.dtype == torch.uint8
    color = torch.tensor(PALETTE[0])
    # inside the mask, away from the box outline and label: alpha blend of gray and the color
    expected = (0.5 * 100 + 0.5 * color.float()).floor()
    assert torch.all((out[:, 30, 35].float() - expected).abs() <= 1)
    # on the box's bottom edge (y=42) the outline has the instance color
    assert torch.equal(out[:, 42, 30], color.to(torch.uint8))
    # outside the box, and where the mask probability is below 0.5: untouched
    assert torch.equal(out[:, 55, 70], image[:, 55, 70])
    assert torch.equal(out[:, 2, 2], image[:, 2, 2])
    # the label tag sits inside the top-left corner of the box, in the instance color
    tag = out[:, 13:20, 12:30].reshape(3, -1).T
    assert any(torch.equal(px, color.to(torch.uint8)) for px in tag)
    assert not torch.equal(image, out)


def test_nothing_above_threshold_leaves_image_unchanged():
    image = gray_image()
    out = draw_predictions(image, fake_prediction(0.3), ["cat", "dog"], score_threshold=0.5)
    assert torch.equal(out, image)
    empty = {k: v[:0] for k, v in fake_prediction(0.9).items()}
    assert torch.equal(draw_predictions(image, empty, score_threshold=0.0), image)


def test_float_image_and_mask_size_check():
    image = gray_image().float() / 255
    out = draw_predictions(image, fake_prediction(0.9), score_threshold=0.5)
    assert out.dtype == torch.uint8 and out.shape == (3, 60, 80)
    assert torch.equal(out[:, 55, 70], torch.full((3,), 100, dtype=torch.uint8))
    with pytest.raises(ValueError, match="image's own coordinates"):
        draw_predictions(gray_image(30, 40), fake_prediction(0.9), score_threshold=0.5)


def test_label_text():
    assert label_text(2, 0.934, ["cat", "dog"]) == "dog 0.93"
    assert label_text(7, 0.5, ["cat", "dog"]) == "7 0.50"
    assert label_text(1, 1.0, None) == "1 1.00"


def write_png(path, h=48, w=72, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_collect_images_mirrors_names_and_names_bad_inputs(tmp_path):
    src = tmp_path / "in"
    a = write_png(src / "a.png")
    write_png(src / "sub" / "b.png")
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    pairs = collect_images([src], out)
    assert pairs == [(a, out / "a.png"), (src / "sub" / "b.png", out / "sub" / "b.png")]
    assert collect_images([a], out) == [(a, out / "a.png")]

    with pytest.raises(ValueError, match="not found: .*missing.jpg"):
        collect_images([tmp_path / "missing.jpg"], out)
    with pytest.raises(ValueError, match="not an image file: .*notes.txt"):
        collect_images([src / "notes.txt"], out)
    write_png(tmp_path / "other" / "a.jpg")
    with pytest.raises(ValueError, match="both be written"):
        collect_images([a, tmp_path / "other" / "a.jpg"], out)
    with pytest.raises(ValueError, match="overwrite the input"):
        collect_images([a], src)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    try:
        from detnorm.modeling.maskrcnn import build_maskrcnn

        model = build_maskrcnn(num_classes=3, depth=18, norm="gn", min_size=64, max_size=96)
    except ImportError:
        from torchvision.models.detection import maskrcnn_resnet50_fpn

        model = maskrcnn_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=96
        )
    return model.eval()


def test_predict_files_with_a_tiny_model(tiny_model, tmp_path):
    img = write_png(tmp_path / "in" / "x.png", h=50, w=70)
    logs = []
    written = predict_files(
        tiny_model, [img], tmp_path / "out", ["a", "b"], score_threshold=0.0, log=logs.append
    )
    assert written == [tmp_path / "out" / "x.png"]
    with Image.open(written[0]) as im:
        assert im.size == (70, 50) and im.mode == "RGB"
    assert "x.png" in logs[0] and "detection(s)" in logs[0]


def test_unreadable_image_names_the_file(tiny_model, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(OSError, match="broken.png"):
        predict_files(tiny_model, [bad], tmp_path / "out", log=lambda s: None)


def test_cli_on_a_module_checkpoint(tmp_path, capsys):
    """A Lightning checkpoint of a DetnormModule -> one PNG per input, same size, names mirrored."""
    module_lib = pytest.importorskip(
        "detnorm.engine.module", reason="detnorm.engine.module not written yet"
    )
    import pytorch_lightning as pl

    from detnorm.cli.predict import main

    module = module_lib.DetnormModule(
        num_classes=3, label_to_cat_id={"1": 5, "2": 7}, category_names=["disc", "bar"],
        norm="gn", depth=18, model_kwargs={"min_size": 64, "max_size": 96},
    )  # fmt: skip
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    trainer.strategy.connect(module)
    ckpt = tmp_path / "tiny.ckpt"
    trainer.save_checkpoint(ckpt)
    inputs = [
        write_png(tmp_path / "in" / "a.png", 40, 56, 1),
        write_png(tmp_path / "in" / "sub" / "b.png", 64, 48, 2),
    ]
    out = tmp_path / "out"
    capsys.readouterr()
    args = ["--checkpoint", str(ckpt), str(tmp_path / "in"), "--output-dir", str(out),
            "--min-side", "0"]  # fmt: skip
    assert main(args) == 0  # without --vis: COCO results only
    assert not list(out.rglob("*.png"))
    assert {p.name for p in out.iterdir()} == {
        "predictions_bbox.json", "predictions_segm.json", "images.json"}  # fmt: skip
    capsys.readouterr()
    args.append("--vis")
    assert main([*args, "--score-threshold", "0"]) == 0
    *logged, summary = capsys.readouterr().out.splitlines()
    assert summary.startswith("wrote ") and "predictions_bbox.json" in summary
    for src, line in zip(inputs, logged, strict=True):
        dst = out / src.relative_to(tmp_path / "in")
        assert line.startswith(f"{src} -> {dst}: ")
        with Image.open(src) as a, Image.open(dst) as b:
            assert a.size == b.size
            changed = not np.array_equal(np.asarray(a), np.asarray(b))
        assert changed == (not line.endswith(": 0 detection(s) with score >= 0"))
    assert main([*args, "--score-threshold", "1"]) == 0  # nothing reaches 1.0: copies of the input
    with Image.open(inputs[0]) as a, Image.open(out / "a.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow  # ~20 s: trains one step and evaluates
def test_cli_end_to_end_on_a_trained_checkpoint(tmp_path, capsys):
    """Train 1 step with the public CLI, then draw predictions of its last checkpoint."""
    pytest.importorskip(
        "detnorm.engine.module", reason="detnorm.engine.module (DetnormModule) not written yet"
    )
    train = pytest.importorskip(
        "detnorm.cli.train", reason="detnorm.cli.train (training CLI) not written yet"
    )
    import yaml

    from detnorm.cli.predict import main
    from detnorm.data.synthetic import generate_dataset

    data = generate_dataset(tmp_path / "data", num_train=2, num_val=1, image_size=(64, 80))
    config = {
        "norm": "gn", "depth": 18, "max_steps": 1, "batch_size": 1, "train_scales": [64],
        "max_size": 96, "test_size": 64, "num_workers": 0, "accelerator": "cpu",
        "precise_bn": False, "data": str(data),
        "model_kwargs": {"rpn_pre_nms_top_n_test": 50, "rpn_post_nms_top_n_test": 20},
    }  # fmt: skip
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert train.main(["--config", str(tmp_path / "tiny.yaml"), "--output-dir", str(run)]) in (
        0,
        None,
    )
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()

    images = data / "images" / "val"
    out = tmp_path / "pred"
    assert (
        main(
            [
                "--checkpoint",
                str(ckpt),
                str(images),
                "--output-dir",
                str(out),
                "--score-threshold",
                "0",
                "--min-side",
                "0",
                "--vis",
            ]
        )
        == 0
    )
    for src in sorted(images.glob("*.jpg")):
        with Image.open(src) as a, Image.open(out / f"{src.stem}.png") as b:
            assert a.size == b.size
    capsys.readouterr()

    assert (
        main(["--checkpoint", str(tmp_path / "nope.ckpt"), str(images), "--output-dir", str(out)])
        == 2
    )
    assert "--checkpoint: file not found" in capsys.readouterr().err
    assert (
        main(["--checkpoint", str(ckpt), str(tmp_path / "nope.png"), "--output-dir", str(out)]) == 2
    )
    assert "nope.png" in capsys.readouterr().err


def test_cli_rejects_bad_threshold_and_device(tmp_path, capsys):
    from detnorm.cli.predict import main

    img = write_png(tmp_path / "a.png")
    for flag, value in (("--score-threshold", "1.5"), ("--device", "gpu7")):
        with pytest.raises(SystemExit) as exc:
            main(["--checkpoint", "x.ckpt", str(img), "--output-dir", str(tmp_path), flag, value])
        assert exc.value.code == 2
        assert flag in capsys.readouterr().err
