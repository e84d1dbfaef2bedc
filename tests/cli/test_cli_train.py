"""``detnorm-train`` in-process on tiny generated data: every norm trains, evaluates and writes
the run directory; every bad value exits 2 with one line naming the option."""

import json

import pytest
import torch
import yaml
from helpers.runs import tiny_args

from detnorm.cli.train import main
from detnorm.evaluation.coco_eval import STAT_NAMES
from detnorm.layers.norm import NORM_NAMES


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


# (argv, what the error line starts with after "detnorm-train: error: ", a further part of it);
# {tmp}, {junk} (a weights file of no known format), {last} (a gn run's checkpoint) and
# {bad_cfg} (a YAML file with an unknown key) are filled in per test
BAD = {
    "unknown-norm": (["--norm", "batchnorm"], "--norm: ", "got 'batchnorm'; allowed: none, bn"),
    "unknown-component-norm": (["--mask-head-norm", "xx"], "--mask-head-norm: ", "'xx'"),
    "gn-groups-not-dividing": (["--norm", "gn", "--gn-groups", "48"], "--gn-groups: ",
                               "not divisible by 48 groups"),
    "gn-groups-not-a-number": (["--norm", "gn", "--gn-groups", "two"], "argument --gn-groups", "two"),
    "2fc-with-a-norm": (["--box-head-norm", "gn", "--box-head", "2fc"], "--box-head: ", "4conv1fc"),
    "missing-data": (["--data", "{tmp}/missing"], "--data: ", "not found"),
    "data-without-layout": (["--data", "{tmp}"], "--data: ", "neither"),
    "missing-train-ann": (["--train-ann", "{tmp}/missing.json"], "--train-ann: ", "not found"),
    "unknown-schedule": (["--schedule", "5x"], "--schedule: ", "allowed: 1x"),
    "unknown-depth": (["--depth", "19"], "--depth: ", "allowed: 18, 34, 50, 101"),
    "unknown-precision": (["--precision", "8"], "--precision: ", "32-true"),
    "zero-max-steps": (["--max-steps", "0"], "--max-steps: ", ">= 1"),
    "negative-batch": (["--batch-size", "-1"], "--batch-size: ", ">= 1"),
    "unknown-flag": (["--bogus-flag"], "unrecognized arguments", "--bogus-flag"),
    "unknown-yaml-key": (["--config", "{bad_cfg}"], "--config: ", "did you mean 'base_lr'"),
    "missing-weights": (["--pretrained", "{tmp}/missing.pth"], "--pretrained: ", "missing.pth"),
    "weights-of-no-format": (["--pretrained", "{junk}"], "--pretrained: ", "junk.pth"),
    "weights-of-another-norm": (["--pretrained", "{last}", "--norm", "bn"], "--pretrained: ", "last.ckpt"),
    "resume-another-norm": (["--resume", "{last}", "--norm", "bn"], "--resume: ", "norm"),
    "resume-another-depth": (["--resume", "{last}", "--norm", "gn", "--depth", "34"], "--resume: ",
                             "depth"),
    "resume-not-a-checkpoint": (["--resume", "{junk}", "--norm", "gn"], "--resume: ", "junk.pth"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_values_exit_2_with_one_line(case, tiny_data, gn_run, tmp_path, capsys):
    argv, start, part = BAD[case]
    junk = tmp_path / "junk.pth"
    torch.save({"nothing": torch.zeros(1)}, junk)
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("learning_rate: 0.1\n")
    slots = {"tmp": tmp_path, "junk": junk, "bad_cfg": bad_cfg,
             "last": gn_run / "checkpoints" / "last.ckpt"}  # fmt: skip
    out = tmp_path / "never"
    code = main(
        [*tiny_args(tiny_data), *(a.format(**slots) for a in argv), "--output-dir", str(out)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("detnorm-train")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"detnorm-train: error: {start}"), lines[0]
    assert part in lines[0], lines[0]
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

    script = Path(__file__).resolve().parents[2] / "tools" / "train.py"
    proc = subprocess.run([sys.executable, str(script), "--norm", "bogus"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("detnorm-train: error: --norm")
