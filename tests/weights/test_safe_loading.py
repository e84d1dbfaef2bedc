"""Loading a weights file never runs code from it: a pickle whose ``__reduce__`` would create a
marker file is refused, with one line naming the file and the blocked global, by every entry
point; ``--trust-weights`` is the explicit opt-in; real detnorm checkpoints load safely."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.runs import tiny_args

from detnorm.engine.checkpoint_io import load_detnorm_module
from detnorm.modeling.maskrcnn import build_maskrcnn
from detnorm.weights import load_weights
from detnorm.weights.safe_load import UnsafeWeightsError, WeightsError, read_weights, torch_load

REPO = Path(__file__).resolve().parents[2]
BLOCKED = "posix.system"  # what os.system pickles as


class Payload:
    """Unpickling this object runs ``touch MARKER`` (with the plain unpickler)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(tmp_path):
    """Files that carry the payload, in every format a user may pass, and the marker path."""
    marker = tmp_path / "MARKER"
    files = {}
    state = build_maskrcnn(num_classes=3, depth=18, norm="gn").state_dict()
    files["ckpt"] = tmp_path / "evil.ckpt"  # a Lightning-like checkpoint with a payload
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()},
                "hyper_parameters": {"num_classes": 2, "x": Payload(marker)}}, files["ckpt"])  # fmt: skip
    files["pth"] = tmp_path / "evil.pth"  # a torchvision-layout state_dict beside a payload
    torch.save({"model": state, "meta": Payload(marker)}, files["pth"])
    files["legacy"] = tmp_path / "evil_legacy.pth"  # torch's pre-1.6 (non-zip) format
    torch.save({"model": state, "meta": Payload(marker)}, files["legacy"],
               _use_new_zipfile_serialization=False)  # fmt: skip
    files["pkl"] = tmp_path / "R-50-GN.pkl"  # a Detectron blob pickle with a payload
    with open(files["pkl"], "wb") as f:
        pickle.dump({"blobs": {"conv1_w": Payload(marker)}}, f, protocol=2)
    return files, marker


def _assert_refusal(text: str, path: Path) -> None:
    assert str(path) in text and BLOCKED in text and "--trust-weights" in text, text
    assert "Traceback" not in text


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["ckpt", "pth", "legacy", "pkl"])
def test_library_loaders_refuse_a_payload(evil, kind):
    files, marker = evil
    model = build_maskrcnn(num_classes=3, depth=18, norm="gn")
    loaders = [lambda p: read_weights(p), lambda p: load_weights(model, p, logger=print)]
    if kind != "pkl":
        loaders += [lambda p: torch_load(p), lambda p: load_detnorm_module(p)]
    for load in loaders:
        with pytest.raises(UnsafeWeightsError) as info:
            load(files[kind])
        assert info.value.name == BLOCKED and info.value.path == files[kind]
        _assert_refusal(str(info.value), files[kind])
        assert "\n" not in str(info.value)
    assert not marker.exists()


def test_trust_weights_is_the_opt_in(evil, tiny_data, tmp_path, capsys):
    """The payload is real: trusted, it runs (the marker appears) and the weights still load;
    ``--trust-weights`` reaches the loaders of train and eval."""
    from detnorm.cli.eval import main as eval_main
    from detnorm.cli.train import main

    files, marker = evil
    model = build_maskrcnn(num_classes=3, depth=18, norm="gn")
    report = load_weights(model, files["pth"], logger=lambda s: None, trust=True)
    assert marker.exists() and report.format == "torchvision_maskrcnn" and not report.missing
    marker.unlink()
    argv = [*tiny_args(tiny_data), "--norm", "gn", "--pretrained", str(files["pth"])]
    assert main([*argv, "--trust-weights", "--output-dir", str(tmp_path / "run")]) == 0
    assert marker.exists()
    marker.unlink()
    capsys.readouterr()
    assert eval_main(["--checkpoint", str(files["ckpt"]), "--trust-weights"]) == 2
    assert marker.exists()  # loaded in full; then no model can be built (no usable hyperparameters)
    assert "cannot rebuild the model from this checkpoint" in capsys.readouterr().err


@pytest.mark.bad_input
def test_train_pretrained_and_resume_refuse(evil, tiny_data, tmp_path, capsys):
    from detnorm.cli.train import main

    files, marker = evil
    for argv, path in [(["--pretrained", str(files["pth"])], files["pth"]),
                       (["--pretrained", str(files["pkl"])], files["pkl"]),
                       (["--resume", str(files["ckpt"])], files["ckpt"])]:  # fmt: skip
        out = tmp_path / "never"
        code = main([*tiny_args(tiny_data), "--norm", "gn", *argv, "--output-dir", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(f"detnorm-train: error: {argv[0]}: "), err
        _assert_refusal(err, path)
        assert not (out / "checkpoints").exists()
    assert not marker.exists()


@pytest.mark.bad_input
def test_eval_checkpoint_refuses(evil, tmp_path, capsys):
    from detnorm.cli.eval import main as eval_main

    files, marker = evil
    code = eval_main(["--checkpoint", str(files["ckpt"]), "--output-dir", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--checkpoint" in err, err
    _assert_refusal(err, files["ckpt"])
    assert not marker.exists()


@pytest.mark.bad_input
def test_predict_checkpoint_refuses_without_traceback(evil, tmp_path):
    from PIL import Image

    files, marker = evil
    Image.new("RGB", (32, 24)).save(tmp_path / "img.png")
    script = REPO / "tools" / "predict.py"
    proc = subprocess.run([sys.executable, str(script), "--checkpoint", str(files["ckpt"]),
                           str(tmp_path / "img.png"), "--output-dir", str(tmp_path / "p")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    _assert_refusal(proc.stderr, files["ckpt"])
    assert not marker.exists()


@pytest.mark.bad_input
def test_pretrain_resume_refuses(evil, tmp_path, capsys):
    from detnorm.cli.pretrain import main as pretrain_main

    files, marker = evil
    out = tmp_path / "pre"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(files["ckpt"].read_bytes())
    args = ["--synthetic", "--norm", "gn", "--depth", "18", "--image-size", "32",
            "--batch-size", "4", "--max-steps", "2", "--num-workers", "0", "--num-train", "8",
            "--num-val", "4", "--output-dir", str(out), "--resume"]  # fmt: skip
    assert pretrain_main(args) == 2
    err = capsys.readouterr().err
    _assert_refusal(err, out / "checkpoints" / "last.ckpt")
    assert not marker.exists()


def test_real_checkpoints_load_with_weights_only(gn_run, tiny_data):
    """detnorm's own checkpoints need no global beyond torch's default allow-list."""
    ckpt = gn_run / "checkpoints" / "last.ckpt"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(ckpt) == []
    plain = torch.load(ckpt, map_location="cpu", weights_only=True)
    ours = torch_load(ckpt)
    assert ours["global_step"] == plain["global_step"] == 2
    for key, value in plain["state_dict"].items():
        assert torch.equal(value, ours["state_dict"][key])
    module = load_detnorm_module(ckpt)
    for key, value in module.state_dict().items():
        assert torch.equal(value, plain["state_dict"][key]), key
    assert read_weights(ckpt)[0] == "detnorm"


@pytest.mark.bad_input
def test_junk_is_a_weights_error_not_a_refusal(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint at all")
    with pytest.raises(WeightsError, match="junk.pth") as info:
        torch_load(junk)
    assert not isinstance(info.value, UnsafeWeightsError)


def test_mapped_load_equals_torch_load_and_still_refuses(evil, tmp_path):
    """``mmap=True`` (how ``DetnormModule.load_from_checkpoint`` reads the hyperparameters
    without the tensors) gives torch.load's values, and still refuses a payload."""
    from detnorm.engine.module import DetnormModule

    path = tmp_path / "plain.pth"
    state = build_maskrcnn(num_classes=3, depth=18, norm="gn").state_dict()
    torch.save({"model": state, "hyper_parameters": {"num_classes": 3}}, path)
    mapped, ref = torch_load(path, mmap=True), torch.load(path, weights_only=True)
    assert mapped["hyper_parameters"] == ref["hyper_parameters"]
    assert all(torch.equal(v, ref["model"][k]) for k, v in mapped["model"].items())
    files, marker = evil
    with pytest.raises(UnsafeWeightsError):
        DetnormModule.load_from_checkpoint(files["ckpt"])
    assert not marker.exists()
