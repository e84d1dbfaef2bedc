"""Presets: option values that apply together, under config files and flags."""

from __future__ import annotations

from typing import Any

__all__ = ["DATA_KEYS", "EMBEDDED_PRESET"]

# Under configs and flags when no dataset is named (neither in a config file nor on the command
# line): the embedded synthetic dataset (clean ~128 px scenes, detnorm.data.synthetic.DEFAULTS),
# so `detnorm-train --norm gn` trains a CPU-sized Mask R-CNN from scratch to a working detector
# in minutes instead of the COCO recipe: ResNet-18 with a 64-wide FPN and heads and 256-d box fcs
# (the 256-wide heads cost ~4x per image here), anchors 8-128 px for objects of 16-77 px,
# reduced RPN/RoI sampling for 2-5 objects per image, 4 images per step at LR 0.04 (base_lr 0.16
# at 16 images; the paper's 0.02 is tuned for 90k steps, not 1000), 1000 steps with the 1x
# decay points (steps 667 and 889) and the 10 % warmup floor, evaluation every 250 steps.
# README "Two commands" gives the measured time and AP; configs/cpu/base.yaml states the same.
EMBEDDED_PRESET: dict[str, Any] = {
    "depth": 18,
    "batch_size": 4,
    "base_lr": 0.16,
    "train_scales": [128],
    "max_size": 200,
    "test_size": 128,
    "max_steps": 1000,
    "eval_period": 250,
    "num_workers": 1,
    "precise_bn_iters": 20,
    "log_every_n_steps": 10,
    "model_kwargs": {
        "fpn_channels": 64,
        "box_fc_dim": 256,
        "anchor_sizes": [8, 16, 32, 64, 128],
        "rpn_batch_size_per_image": 64,
        "rpn_pre_nms_top_n_train": 600,
        "rpn_post_nms_top_n_train": 300,
        "rpn_pre_nms_top_n_test": 300,
        "rpn_post_nms_top_n_test": 100,
        "box_batch_size_per_image": 32,
        "box_detections_per_img": 50,
    },
}

# naming any of these (in a config file, a flag or --set) means the run does not use the embedded
# dataset, so EMBEDDED_PRESET does not apply
DATA_KEYS = ("data", "train_ann", "train_images", "val_ann", "val_images")
