"""Trainer options: accumulation padding and step alignment, ``--max-epochs``, early stopping on
``val/score``, ``--logger``, ``--max-detections`` reaching the evaluator, and AdamW + cosine
reaching the run."""

import csv
import importlib.util
import re

import pytest
import torch
import yaml
from helpers.errors import raises_option
from helpers.runs import assert_same_checkpoint
from helpers.tiny_coco import write_split

from detnorm.cli.train import main, parse_config
from detnorm.data.sampler import GroupedBatchSampler
from detnorm.engine import loggers as L
from detnorm.engine.trainer_options import batch_note
from detnorm.solver.schedule import resolve_schedule


@pytest.fixture(scope="module")
def three_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("opts") / "data"
    write_split(root, "train", [[(4, 6, 20, 14, 1)], [(30, 30, 20, 20, 2)], [(10, 34, 22, 20, 1)]])
    write_split(root, "val", [[(8, 8, 20, 20, 1)]], seed=1)
    cfg = root.parent / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({
        "depth": 18, "train_scales": [64], "max_size": 64, "test_size": 64, "num_workers": 0,
        "accelerator": "cpu", "log_every_n_steps": 1, "data": str(root), "norm": "gn",
        "gn_groups": 8, "precise_bn": False,
        "model_kwargs": {"rpn_pre_nms_top_n_train": 100, "rpn_post_nms_top_n_train": 50,
                         "rpn_pre_nms_top_n_test": 50, "rpn_post_nms_top_n_test": 20,
                         "box_batch_size_per_image": 16, "box_detections_per_img": 20},
    }))  # fmt: skip
    return cfg


def _rows(out):
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_sampler_pads_epochs_to_whole_accumulated_steps():
    groups = [0] * 5  # 5 images, batch 1: 5 batches
    assert len(GroupedBatchSampler(groups, 1)) == 5
    plain = GroupedBatchSampler(groups, 1, accumulate=1)
    assert list(plain) == list(GroupedBatchSampler(groups, 1))  # K=1 unchanged
    for world, k, expected in ((1, 2, 6), (1, 3, 6), (2, 2, 4)):
        per_rank = [list(GroupedBatchSampler(groups, 1, num_replicas=world, rank=r, accumulate=k))
                    for r in range(world)]  # fmt: skip
        assert [len(b) for b in per_rank] == [expected] * world
        seen = {i for batches in per_rank for b in batches for i in b}
        assert seen == set(range(5))  # padding repeats batches, it drops none


def test_accumulation_max_epochs_logger_detections_adamw_cosine(three_images, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--config", str(three_images), "--batch-size", "1", "--accumulate-grad-batches", "2",
            "--max-epochs", "2", "--eval-period", "1", "--checkpoint-period", "1",
            "--max-detections", "150", "--logger", "csv", "tensorboard", "--optimizer", "adamw",
            "--base-lr", "0.0008", "--lr-schedule", "cosine", "--warmup-iters", "0",
            "--output-dir", str(out)]  # fmt: skip
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "x 2 accumulated = 2 images per optimizer step" in stdout
    assert "| maxDets 150 |" in stdout and "AR150" in stdout
    config = yaml.safe_load((out / "config.yaml").read_text())
    # 3 images at batch 1, padded to 4 batches = 2 steps per epoch; 2 epochs
    spec = resolve_schedule("1x", 2, max_steps=4, base_lr=0.0008, warmup_iters=0,
                            lr_schedule="cosine")  # fmt: skip
    assert (config["max_steps"], config["max_epochs"], config["total_batch_size"]) == (4, 2, 2)
    assert config["milestones"] == [] and config["lr"] == pytest.approx(spec.lr)
    assert config["max_detections"] == 150 and config["optimizer"] == "adamw"
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4
    assert "exp_avg" in next(iter(ckpt["optimizer_states"][0]["state"].values()))  # AdamW
    for step in (1, 2, 3, 4):  # one checkpoint per optimizer step, none mid-accumulation
        assert (out / "checkpoints" / f"step={step:06d}.ckpt").is_file()
    assert len(list((out / "checkpoints").glob("step=*.ckpt"))) == 4
    rows = _rows(out)
    val_steps = sorted({int(r["step"]) for r in rows if r.get("val/score")})
    assert len(val_steps) == 4  # evaluated after each of the 4 optimizer steps
    lrs = [float(r["lr"]) for r in rows if r.get("lr")]
    expected = [spec.lr * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * it / 4)).item())
                for it in range(4)]  # fmt: skip
    assert lrs == pytest.approx(expected, rel=1e-5)
    metrics = yaml.safe_load((out / "metrics.json").read_text())
    assert "AR150" in metrics["bbox"] and "AR100" not in metrics["bbox"]
    assert list((out / "tb").glob("events.out.tfevents.*"))


def test_early_stopping_stops_after_patience_evaluations(three_images, tmp_path, capsys):
    out = tmp_path / "early"
    argv = ["--config", str(three_images), "--batch-size", "1", "--max-steps", "6",
            "--eval-period", "1", "--early-stopping-patience", "1", "--logger", "csv",
            "--output-dir", str(out)]  # fmt: skip
    assert main(argv) == 0
    scores = {}
    for r in _rows(out):
        if r.get("val/score"):
            scores[int(r["step"])] = float(r["val/score"])
    seq = [scores[s] for s in sorted(scores)]
    # independently: Lightning's rule, patience 1: stop at the first score not above the best
    expected = len(seq)
    for i in range(1, len(seq)):
        if not seq[i] > max(seq[:i]):
            expected = i + 1
            break
    assert len(seq) == expected, seq
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    if expected < 6:
        assert ckpt["global_step"] == expected
        assert f"early stopping at step {expected}" in capsys.readouterr().out


def test_missing_logger_packages_are_refused(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("wandb", "mlflow") else real(name, *a))  # fmt: skip
    for name in ("wandb", "mlflow"):
        with raises_option(f"--logger: {name}: the '{name}' package is not"):
            parse_config(["--logger", "csv", name])
    with raises_option("--logger: got 'tensorbord'; allowed: csv, tensorboard"):
        parse_config(["--logger", "tensorbord"])


def test_csv_is_always_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(L, "missing_package", lambda name: name if name == "tensorboard" else None)
    built = L.build_loggers(["tensorboard"], tmp_path, run_name="r")
    assert [type(x).__name__ for x in built] == ["RunCSVLogger"]
    assert "tensorboard is not installed" in capsys.readouterr().err
    assert [type(x).__name__ for x in L.build_loggers([], tmp_path, run_name="r")] == [
        "RunCSVLogger"
    ]


def test_the_norm_table_note_says_what_the_norms_see():
    cfg = {"batch_size": 2, "accumulate_grad_batches": 4, "devices": 8, "num_nodes": 2}
    norms = {"backbone": "frozen_bn", "fpn": "sync_bn", "box_head": "bn", "mask_head": "gn"}
    note = batch_note(cfg, norms)
    assert "2 images per device x 8 device(s) x 2 node(s) x 4 accumulated = 128 images" in note
    assert "bn (box_head): batch statistics come from the per-device batch of 2" in note
    assert "sync_bn (fpn): batch statistics come from 2 x 16 image(s)" in note
    assert "accumulation is exact for them" in note
    assert "bn (" not in batch_note(cfg, dict.fromkeys(norms, "gn"))


def test_accumulated_run_resumed_mid_epoch_equals_uninterrupted(tmp_path_factory, tmp_path):
    """5 images at batch 1, K=2: epochs of 6 batches (padded) = 3 steps; resuming from step 2
    restarts mid-epoch, at the first batch of an accumulated step."""
    root = tmp_path_factory.mktemp("resume") / "data"
    write_split(root, "train", [[(4 + 6 * i, 6, 20, 14, 1 + i % 2)] for i in range(5)])
    write_split(root, "val", [[(8, 8, 20, 20, 1)]], seed=1)
    args = ["--data", str(root), "--depth", "18", "--train-scales", "64", "--max-size", "64",
            "--test-size", "64", "--num-workers", "0", "--accelerator", "cpu", "--norm", "gn",
            "--gn-groups", "8", "--batch-size", "1", "--accumulate-grad-batches", "2",
            "--max-steps", "4", "--checkpoint-period", "2", "--logger", "csv", "--deterministic",
            "--set", "model_kwargs.rpn_post_nms_top_n_train=50"]  # fmt: skip
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert main([*args, "--output-dir", str(full)]) == 0
    mid = full / "checkpoints" / "step=000002.ckpt"
    state = torch.load(mid, map_location="cpu", weights_only=False)
    assert state["global_step"] == 2
    sampler = next(v["train_sampler"] for v in state.values()
                   if isinstance(v, dict) and "train_sampler" in v)  # fmt: skip
    assert (sampler["epoch"], sampler["consumed"]) == (0, 4)  # 4 of the epoch's 6 batches
    assert main([*args, "--output-dir", str(resumed), "--resume", str(mid)]) == 0
    a, b = (torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
            for d in (full, resumed))  # fmt: skip
    assert a["global_step"] == b["global_step"] == 4
    assert_same_checkpoint(a, b, start=state)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--accumulate-grad-batches", "0"], "--accumulate-grad-batches: must be an integer >= 1"),
        (["--max-epochs", "0"], "--max-epochs: must be an integer >= 1"),
        (["--max-detections", "0"], "--max-detections: must be an integer >= 1"),
        (["--early-stopping-patience", "0"], "--early-stopping-patience: must be an integer"),
        (["--set", "keep_empty=maybe"], "--keep-empty: got 'maybe'"),
        (["--set", "logger=7"], "--logger: must be a list of"),
    ],
)
def test_bad_values_name_the_option(argv, message):
    with raises_option("^" + re.escape(message)):
        parse_config(argv)


def test_wandb_and_mlflow_write_under_the_run(tmp_path, monkeypatch):
    """Neither package is a dependency: check the arguments detnorm gives Lightning's loggers."""
    import pytorch_lightning.loggers as pll

    made = {}

    def fake(name):
        def make(**kwargs):
            made[name] = kwargs
            return name

        return make

    monkeypatch.setattr(L, "missing_package", lambda name: None)
    monkeypatch.setattr(pll, "WandbLogger", fake("wandb"))
    monkeypatch.setattr(pll, "MLFlowLogger", fake("mlflow"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    built = L.build_loggers(["wandb", "mlflow", "wandb"], tmp_path, run_name="r1")
    assert built[1:] == ["wandb", "mlflow"]  # after the CSV logger, each once
    assert made["wandb"] == {"name": "r1", "save_dir": str(tmp_path), "project": "detnorm"}
    assert made["mlflow"]["tracking_uri"] == (tmp_path / "mlruns").resolve().as_uri()
    assert made["mlflow"]["run_name"] == "r1"
