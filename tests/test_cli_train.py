"""``detnorm-train`` in-process on tiny generated data: every norm trains, evaluates and writes
the run directory; every bad value exits 2 with one line naming the option."""

import json

import pytest
import torch
import yaml

from detnorm.cli.train import main
from detnorm.evaluation.coco_eval import STAT_NAMES
from detnorm.layers.norm import NORM_NAMES


def tiny_args(data) -> list[str]:
    """A run of a few seconds: R-18, 64 px images, few proposals, 2 steps."""
    cfg = data.parent / "tiny.yaml"
    if not cfg.exists():
        cfg.write_text(
            yaml.safe_dump(
                {
                    "depth": 18,
                    "train_scales": [64],
                    "max_size": 96,
                    "test_size": 64,
                    "batch_size": 2,
                    "num_workers": 0,
                    "max_steps": 2,
                    "checkpoint_period": 1,
                    "precise_bn_iters": 2,
                    "log_every_n_steps": 1,
                    "accelerator": "cpu",
                    "model_kwargs": {
                        "rpn_batch_size_per_image": 32,
                        "rpn_pre_nms_top_n_train": 100,
                        "rpn_post_nms_top_n_train": 50,
                        "rpn_pre_nms_top_n_test": 100,
                        "rpn_post_nms_top_n_test": 50,
                        "box_batch_size_per_image": 16,
                        "box_detections_per_img": 20,
                    },
                }
            )
        )
    return ["--config", str(cfg), "--data", str(data)]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    from detnorm.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("tiny") / "data"
    generate_dataset(root, seed=0, num_train=4, num_val=2, image_size=64)
    return root


@pytest.fixture(scope="module")
def gn_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "gn"
    assert main([*tiny_args(tiny_data), "--norm", "gn", "--output-dir", str(out)]) == 0
    return out


def _check_run(out, norm):
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 2
    for iou_type in ("bbox", "segm"):
        assert set(STAT_NAMES) <= set(metrics[iou_type])
        assert (out / f"results_{iou_type}.json").is_file()
    config = yaml.safe_load((out / "config.yaml").read_text())
    # a model-wide frozen_bn freezes the (pretrained) backbone only; the rest has no statistics
    expected = ["frozen_bn", "none", "none", "none"] if norm == "frozen_bn" else [norm] * 4
    assert [config[f"{c}_norm"] for c in ("backbone", "fpn", "box_head", "mask_head")] == expected
    assert (config["total_batch_size"], config["max_steps"]) == (2, 2)
    for name in ("last.ckpt", "best.ckpt", "step=000001.ckpt", "step=000002.ckpt"):
        assert (out / "checkpoints" / name).is_file(), name
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    for col in ("step", "lr", "train/loss", "train/loss_mask", "val/bbox_AP", "val/segm_AP"):
        assert col in header
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2 and ckpt["hyper_parameters"]["norm"] == norm
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries


@pytest.mark.parametrize("norm", NORM_NAMES)
def test_every_norm_trains_and_evaluates(norm, tiny_data, gn_run, tmp_path, capsys):
    if norm == "gn":
        out = gn_run
    else:
        out = tmp_path / norm
        assert main([*tiny_args(tiny_data), "--norm", norm, "--output-dir", str(out)]) == 0
        stdout = capsys.readouterr().out
        assert "| component | norm |" in stdout and "| segm |" in stdout
    _check_run(out, norm)


def _bad(tmp_path, tiny_data, gn_run):
    junk = tmp_path / "junk.pth"
    torch.save({"nothing": torch.zeros(1)}, junk)
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("learning_rate: 0.1\n")
    last = str(gn_run / "checkpoints" / "last.ckpt")
    return [
        (["--norm", "batchnorm"], "--norm"),
        (["--mask-head-norm", "xx"], "--mask-head-norm"),
        (["--norm", "gn", "--gn-groups", "48"], "--gn-groups 48"),
        (["--norm", "gn", "--gn-groups", "two"], "--gn-groups"),
        (["--box-head-norm", "gn", "--box-head", "2fc"], "--box-head"),
        (["--data", str(tmp_path / "missing")], "--data"),
        (["--data", str(tmp_path)], "--data"),  # exists, but no recognizable layout
        (["--train-ann", str(tmp_path / "missing.json")], "--train-ann"),
        (["--schedule", "5x"], "--schedule"),
        (["--depth", "19"], "--depth"),
        (["--precision", "8"], "--precision"),
        (["--max-steps", "0"], "--max-steps"),
        (["--batch-size", "-1"], "--batch-size"),
        (["--bogus-flag"], "--bogus-flag"),
        (["--config", str(bad_cfg)], "learning_rate"),
        (["--pretrained", str(tmp_path / "missing.pth")], "--pretrained"),
        (["--pretrained", str(junk)], "--pretrained"),
        (["--pretrained", last, "--norm", "bn"], "--pretrained"),
        (["--resume", last, "--norm", "bn"], "--resume"),
        (["--resume", last, "--norm", "gn", "--depth", "34"], "--resume"),
        (["--resume", str(junk), "--norm", "gn"], "--resume"),
    ]


def test_bad_values_exit_2_with_one_line(tiny_data, gn_run, tmp_path, capsys):
    for argv, option in _bad(tmp_path, tiny_data, gn_run):
        out = tmp_path / "never"
        code = main([*tiny_args(tiny_data), *argv, "--output-dir", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2, (argv, err)
        lines = [ln for ln in err.splitlines() if ln.startswith("detnorm-train")]
        assert len(lines) == 1 and lines[0].startswith("detnorm-train: error: "), (argv, err)
        assert option in lines[0], (argv, lines[0])
        assert not (out / "checkpoints").exists()


def test_eval_checkpoint_reproduces_the_final_metrics(gn_run, tiny_data, tmp_path, capsys):
    from detnorm.cli.eval import main as eval_main

    out = tmp_path / "eval"
    ckpt = gn_run / "checkpoints" / "last.ckpt"
    argv = ["--checkpoint", str(ckpt), "--data", str(tiny_data), "--output-dir", str(out)]
    # evaluation runs one image per batch, so the training's --batch-size 2 does not matter
    assert eval_main([*argv, "--batch-size", "3"]) == 0
    assert "| bbox |" in capsys.readouterr().out
    trained = json.loads((gn_run / "metrics.json").read_text())
    evaluated = json.loads((out / "metrics.json").read_text())
    for iou_type in ("bbox", "segm"):
        assert evaluated[iou_type] == trained[iou_type]
    code = eval_main(["--checkpoint", str(tmp_path / "missing.ckpt")])
    assert code == 2 and "--checkpoint" in capsys.readouterr().err


def test_tools_train_shim(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "tools" / "train.py"
    proc = subprocess.run([sys.executable, str(script), "--norm", "bogus"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("detnorm-train: error: --norm")
