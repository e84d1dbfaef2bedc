"""TorchScript and ONNX export: every norm, both input formats, checked against eager.

The exported files are run by torch.jit.load and by onnxruntime itself, never by the code that
wrote them, and compared with the eager model on three generated scenes of different sizes
(none of them the ONNX example size): same detections, boxes and scores within 1e-4, mask IoU
at least 0.99 over each image's instances, and a mask pixel may differ only where the eager
probability is within 1e-3 of the 0.5 threshold.
"""

from __future__ import annotations

import pytest
import torch
from helpers.predict_helpers import calibrated_model, save_checkpoint, scene_images, tiny_module

from detnorm.inference.export import ExportError, deployable, export_onnx, export_torchscript

NORMS = ("frozen_bn", "bn", "sync_bn", "gn", "gn_ws", "ln", "in")
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def images():
    return scene_images(3)


def assert_same_detections(eager: dict, got: dict) -> None:
    n = len(eager["scores"])
    assert n > 0 and len(got["scores"]) == n
    assert torch.equal(got["labels"].long(), eager["labels"])
    torch.testing.assert_close(got["boxes"], eager["boxes"], atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(got["scores"], eager["scores"], atol=TOLERANCE, rtol=0)
    assert got["masks"].shape == eager["masks"].shape
    p = eager["masks"][:, 0]
    a, b = p > 0.5, got["masks"][:, 0] > 0.5
    assert (a & b).sum() >= 0.99 * (a | b).sum()  # mask IoU over the image's instances
    # and a pixel may differ only where eager's probability is within float rounding of 0.5
    assert torch.all((p[a != b] - 0.5).abs() < 1e-3)


@pytest.mark.parametrize("input_format", ["rgb", "caffe2"])
@pytest.mark.parametrize("norm", NORMS)
def test_torchscript_matches_eager(norm, input_format, images, tmp_path):
    model = calibrated_model(norm, input_format, images)
    with torch.no_grad():
        eager = model(images)  # one batch of three sizes, as the scripted model gets it
    path = export_torchscript(model, tmp_path / "model.pt")
    scripted = torch.jit.load(str(path))
    with torch.no_grad():
        got = scripted(images)
    assert len(got) == 3
    for e, g in zip(eager, got, strict=True):
        assert_same_detections(e, g)


@pytest.mark.parametrize("input_format", ["rgb", "caffe2"])
@pytest.mark.parametrize("norm", NORMS)
def test_onnx_matches_eager(norm, input_format, images, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = calibrated_model(norm, input_format, images)
    path = export_onnx(model, tmp_path / "model.onnx", image_size=(64, 64))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert names == ["boxes", "scores", "labels", "masks"]
    for image in images:
        with torch.no_grad():
            eager = model([image])[0]
        values = session.run(None, {"image": image.numpy()})
        assert_same_detections(
            eager, {n: torch.from_numpy(v) for n, v in zip(names, values, strict=True)}
        )


def test_deployable_leaves_the_model_alone_and_swaps_only_eval_equivalent_layers(images):
    from torch import nn

    from detnorm.layers.sync_bn import SyncBatchNorm
    from detnorm.layers.ws_conv import WSConv2d

    for norm, gone in (("sync_bn", SyncBatchNorm), ("gn_ws", WSConv2d)):
        model = calibrated_model(norm, "rgb", images)
        copy = deployable(model)
        assert any(isinstance(m, gone) for m in model.modules())  # the original is untouched
        assert not any(isinstance(m, gone) for m in copy.modules())
        assert not copy.training and not any(m.training for m in copy.modules())
        kinds = (nn.BatchNorm2d,) if norm == "sync_bn" else (nn.Conv2d,)
        assert sum(isinstance(m, kinds) for m in copy.modules()) >= sum(
            isinstance(m, gone) for m in model.modules()
        )
        with torch.no_grad():
            for a, b in zip(model(images), copy(images), strict=True):
                assert_same_detections(a, b)


def test_cli_exports_a_checkpoint_and_checks_it(images, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from detnorm.cli.export import main

    ckpt = save_checkpoint(tiny_module("gn"), tmp_path / "tiny.ckpt")
    for fmt, name in (("torchscript", "m.pt"), ("onnx", "m.onnx")):
        out = tmp_path / name
        assert main(["--checkpoint", str(ckpt), "--format", fmt, "--output", str(out),
                     "--image-size", "56", "72"]) == 0  # fmt: skip
        printed = capsys.readouterr().out
        assert f"wrote {out} ({fmt}" in printed and "checked against eager" in printed
        assert out.is_file() and not list(tmp_path.glob(f".{name}.*"))  # no temporary left


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    import builtins

    from detnorm.cli.export import main

    ckpt = save_checkpoint(tiny_module("gn"), tmp_path / "tiny.ckpt")
    out = str(tmp_path / "m.onnx")
    cases = [
        (["--checkpoint", str(tmp_path / "nope.ckpt"), "--format", "onnx", "--output", out],
         "--checkpoint: file not found"),
        (["--checkpoint", str(ckpt), "--format", "tflite", "--output", out], "--format"),
        (["--checkpoint", str(ckpt), "--format", "onnx", "--output", out, "--image-size", "0",
          "8"], "--image-size"),
    ]  # fmt: skip
    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name in ("onnx", "onnxruntime"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    monkeypatch.setattr(builtins, "__import__", no_onnx)
    assert main(["--checkpoint", str(ckpt), "--format", "onnx", "--output", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "detnorm-export: cannot export: onnx: the onnx package is not installed; "
        "pip install 'detnorm[export]'"
    )


def test_a_model_torchscript_cannot_compile_is_refused_in_one_line(tmp_path):
    model = tiny_module("gn").model

    class Unscriptable(torch.nn.Module):
        def forward(self, x):
            return torch.from_numpy(x.numpy())  # numpy is not expressible in TorchScript

    model.roi_heads.mask_predictor = Unscriptable()
    with pytest.raises(ExportError, match=r"^torchscript: torch.jit.script cannot compile"):
        export_torchscript(model, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
