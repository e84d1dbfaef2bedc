"""Tiny detnorm checkpoints and data for the predictor, predict-CLI and export tests.

The models are narrow ResNet-18 FPNs (32-wide FPN and heads) at a 64 px test size, random-init
with two predictor changes so that every image has clear detections: the class-score bias of
category 1 is raised (scores near 0.6-0.9 instead of a flat 1/3), and the mask logits are
scaled up and biased down so that mask probabilities sit far from the 0.5 threshold (a zero
bias puts every pixel without features at exactly 0.5, where float rounding decides).
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY_MODEL_KWARGS = {
    "min_size": 64,
    "max_size": 96,
    "fpn_channels": 32,
    "box_fc_dim": 32,
    "anchor_sizes": [8, 16, 32, 64, 128],
    "rpn_pre_nms_top_n_test": 60,
    "rpn_post_nms_top_n_test": 30,
    "box_detections_per_img": 8,
}


def sharpen_predictors(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Make a random-init Mask R-CNN give confident, distinct detections (see module doc)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        cls = model.roi_heads.box_predictor.cls_score
        cls.weight.copy_(torch.randn(cls.weight.shape, generator=gen) * 0.5)
        cls.bias.zero_()
        cls.bias[1:] = torch.tensor([1.5, 1.0])
        mask = model.roi_heads.mask_predictor.mask_fcn_logits
        mask.weight.mul_(4.0)
        mask.bias.fill_(-1.0)  # where the head's features are all zero: background, not p = 0.5
    return model


def tiny_module(norm: str = "gn", *, input_format: str = "rgb", seed: int = 0,
                module_kwargs: dict | None = None, **model_kwargs):  # fmt: skip
    """A ``DetnormModule`` for categories 5 ("disc") and 7 ("bar"), ready to predict."""
    from detnorm.engine.module import DetnormModule

    torch.manual_seed(seed)
    module = DetnormModule(
        num_classes=3, label_to_cat_id={"1": 5, "2": 7}, category_names=["disc", "bar"],
        norm=norm, depth=18, input_format=input_format,
        model_kwargs={**TINY_MODEL_KWARGS, **model_kwargs}, **(module_kwargs or {}),
    )  # fmt: skip
    sharpen_predictors(module.model, seed)
    return module.eval()


def scene_images(count: int = 3) -> list[torch.Tensor]:
    """``count`` generated scenes of different sizes, ``(3, H, W)`` float RGB in [0, 1]."""
    from detnorm.data.synthetic import render_image
    from detnorm.data.transforms import image_to_tensor

    sizes = [(112, 144), (128, 96), (120, 120), (96, 160)]  # the model works at 64 px
    return [
        image_to_tensor(render_image(7, 1, i, image_size=sizes[i % 4], clutter=False)[0])
        for i in range(count)
    ]


def calibrate_bn(model: torch.nn.Module, images: list[torch.Tensor]) -> torch.nn.Module:
    """Give BN layers of the backbone and FPN the statistics of ``images``, as pretraining would
    (a random-init BN has mean 0 / variance 1, which Caffe2's 0-255 input overflows)."""
    from detnorm.layers.batch_stats import update_bn_stats

    def forward(m, batch):
        m.backbone(m.transform(batch)[0].tensors)

    update_bn_stats(model, [images], 1, forward)
    return model.eval()


def calibrated_model(norm: str, input_format: str, images: list[torch.Tensor]) -> torch.nn.Module:
    """:func:`tiny_module`'s model with BN / FrozenBN statistics from ``images``."""
    model = tiny_module(norm, input_format=input_format).model
    if norm == "frozen_bn":  # FrozenBN has no statistics to update: take a BN twin's
        twin = tiny_module("none", input_format=input_format,
                           module_kwargs={"backbone_norm": "bn"}).model  # fmt: skip
        state = calibrate_bn(twin, images).state_dict()
        model.load_state_dict({k: v for k, v in state.items()
                               if not k.endswith("num_batches_tracked")})  # fmt: skip
    elif norm in ("bn", "sync_bn"):
        calibrate_bn(model, images)
    return model.eval()


def save_checkpoint(module, path: Path) -> Path:
    """Write ``module`` as Lightning does at the end of a ``tools/train.py`` run."""
    import pytorch_lightning as pl

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


def tiny_dataset(root: Path, num_val: int = 3) -> Path:
    """A generated COCO dataset whose categories are ids 5 and 7 (as :func:`tiny_module`)."""
    import json

    from detnorm.data.synthetic import generate_dataset

    data = generate_dataset(root, num_train=1, num_val=num_val, image_size=(56, 72),
                            objects=(2, 4), min_object=10, clutter=False)  # fmt: skip
    for split in ("train", "val"):
        path = data / "annotations" / f"{split}.json"
        coco = json.loads(path.read_text())
        remap = {c["id"]: (5 if i == 0 else 7) for i, c in enumerate(coco["categories"][:2])}
        coco["categories"] = [
            {**c, "id": remap[c["id"]]} for c in coco["categories"] if c["id"] in remap
        ]
        coco["annotations"] = [
            {**a, "category_id": remap[a["category_id"]]}
            for a in coco["annotations"]
            if a["category_id"] in remap
        ]
        path.write_text(json.dumps(coco))
    return data
