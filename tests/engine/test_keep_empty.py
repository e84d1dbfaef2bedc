"""``--keep-empty``: training images without annotations reach the model with empty targets,
and the losses stay finite."""

import math

import pytest
import torch
import yaml
from helpers.tiny_coco import write_split

from detnorm.cli.train import main, parse_config
from detnorm.engine import build as T
from detnorm.engine.module import DetnormModule


@pytest.fixture(scope="module")
def mostly_empty(tmp_path_factory):
    root = tmp_path_factory.mktemp("empty") / "data"
    write_split(root, "train", [[(4, 6, 20, 14, 1), (36, 30, 18, 24, 2)], [], [], []])
    write_split(root, "val", [[(8, 8, 20, 20, 1)], []], seed=1)
    cfg = root.parent / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({
        "depth": 18, "train_scales": [64], "max_size": 64, "test_size": 64, "num_workers": 0,
        "batch_size": 2, "max_steps": 2, "accelerator": "cpu", "logger": ["csv"],
        "log_every_n_steps": 1, "data": str(root), "norm": "gn", "gn_groups": 8,
        "model_kwargs": {"rpn_pre_nms_top_n_train": 100, "rpn_post_nms_top_n_train": 50,
                         "rpn_pre_nms_top_n_test": 50, "rpn_post_nms_top_n_test": 20,
                         "box_batch_size_per_image": 16, "box_detections_per_img": 20},
    }))  # fmt: skip
    return cfg


def test_the_flag_reaches_the_datamodule(mostly_empty):
    dropped = T.build_datamodule(parse_config(["--config", str(mostly_empty)]))
    kept = T.build_datamodule(parse_config(["--config", str(mostly_empty), "--keep-empty"]))
    assert (len(dropped.train_set), len(kept.train_set)) == (1, 4)
    assert kept.keep_empty is True and len(kept.val_set) == 2  # val keeps every image anyway


def test_empty_images_reach_the_model_with_empty_targets_and_finite_losses(mostly_empty):
    cfg = parse_config(["--config", str(mostly_empty), "--keep-empty", "--batch-size", "4"])
    dm = T.build_datamodule(cfg)
    images, targets = next(iter(dm.train_dataloader()))
    empty = [t for t in targets if len(t["boxes"]) == 0]
    assert len(images) == 4 and len(empty) == 3
    for img, t in zip(images, targets, strict=True):
        n = len(t["boxes"])
        assert t["boxes"].shape == (n, 4) and t["labels"].shape == (n,)
        assert t["masks"].shape == (n, *img.shape[-2:])
    module = DetnormModule(**T.module_hparams(cfg, dm, 4))
    module.train()
    only_empty = [i for i, t in enumerate(targets) if len(t["boxes"]) == 0]
    for idx in (only_empty[:2], list(range(4))):  # a batch of empty images, and a mixed one
        losses = module.model([images[i] for i in idx], [targets[i] for i in idx])
        assert all(math.isfinite(float(v.detach())) for v in losses.values()), losses
        loss = sum(losses.values())
        module.zero_grad()
        loss.backward()
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
        if len(idx) == 2:  # nothing to regress or segment: those terms are exactly 0
            assert float(losses["loss_box_reg"]) == 0.0 and float(losses["loss_mask"]) == 0.0
            assert float(losses["loss_objectness"]) > 0.0


def test_a_run_trains_on_them(mostly_empty, tmp_path):
    out = tmp_path / "run"
    assert main(["--config", str(mostly_empty), "--keep-empty", "--output-dir", str(out)]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["keep_empty"] is True
    rows = (out / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    losses = [r.split(",")[header.index("train/loss")] for r in rows[1:]]
    losses = [float(v) for v in losses if v]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
