"""predictions.png: the grid's geometry, ground truth beside predictions, upscaled panels; and
tools/predict.py's upscaling of small images."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from detnorm.analysis.visualize import PALETTE, predict_files
from detnorm.engine.prediction_grid import HEADER, PAD, write_prediction_grid

H, W = 48, 64  # upscaled by ceil(512 / 48) = 11 -> 528 x 704 panels


class FixedModel(nn.Module):
    """Stands in for MaskRCNN in eval mode: one detection (label 2, score 0.9) on every image,
    box x 30..50 y 10..30, mask on x 34..46 y 14..26; and one of score 0.2 (never drawn)."""

    def forward(self, images):
        h, w = images[0].shape[-2:]
        masks = torch.zeros(2, 1, h, w)
        masks[0, 0, 14:26, 34:46] = 1.0
        return [{"boxes": torch.tensor([[30.0, 10.0, 50.0, 30.0], [0.0, 0.0, 8.0, 8.0]]),
                 "labels": torch.tensor([2, 1]), "scores": torch.tensor([0.9, 0.2]),
                 "masks": masks} for _ in images]  # fmt: skip


def dataset(n: int):
    """``n`` gray images, each with one ground-truth instance: box x 4..20 y 6..40, label 1."""
    items = []
    for i in range(n):
        masks = torch.zeros(1, H, W, dtype=torch.uint8)
        masks[0, 6:40, 4:20] = 1
        target = {"boxes": torch.tensor([[4.0, 6.0, 20.0, 40.0]]), "labels": torch.tensor([1]),
                  "masks": masks, "image_id": 100 + i}  # fmt: skip
        items.append((torch.full((3, H, W), 0.4), target))
    return items


def test_grid_geometry_ground_truth_beside_predictions(tmp_path):
    path = write_prediction_grid(FixedModel(), dataset(9), tmp_path / "predictions.png",
                                 ["disc", "bar"], num_images=8, min_side=512)  # fmt: skip
    f = 11
    ph, pw = H * f, W * f
    with Image.open(path) as im:
        assert im.size == (PAD + 4 * (pw + PAD), PAD + 4 * (HEADER + ph + PAD))  # 8 pairs, 2 a row
        grid = np.asarray(im.convert("RGB")).astype(int)
    gray = round(0.4 * 255)

    def panel(row: int, col: int) -> np.ndarray:  # col 0..3: gt, pred, gt, pred
        y, x = PAD + row * (HEADER + ph + PAD) + HEADER, PAD + col * (pw + PAD)
        return grid[y : y + ph, x : x + pw]

    for row in range(4):
        for pair in range(2):
            gt, pred = panel(row, 2 * pair), panel(row, 2 * pair + 1)
            # ground truth: mask fill (alpha 0.5 over gray) inside its upscaled box, image elsewhere
            color = np.array(PALETTE[0])
            inside = gt[int(20 * f), int(12 * f)]
            assert np.abs(inside - (0.5 * gray + 0.5 * color)).max() <= 1
            assert np.abs(gt[int(45 * f), int(60 * f)] - gray).max() <= 1
            assert (gt[int(25 * f), 4 * f] == color).all()  # left edge of the box, at 11x
            # predictions: the 0.9 detection is drawn, the 0.2 one (top-left corner) is not
            inside = pred[int(20 * f), int(40 * f)]
            assert np.abs(inside - (0.5 * gray + 0.5 * color)).max() <= 1
            assert np.abs(pred[int(5 * f), int(3 * f)] - gray).max() <= 1
            assert np.abs(pred[int(20 * f), int(12 * f)] - gray).max() <= 1  # no gt drawn here
    assert (grid[: PAD - 1] == 255).all() and (grid[:, : PAD - 1] == 255).all()


def test_few_images_and_large_images_are_not_upscaled(tmp_path):
    path = write_prediction_grid(FixedModel(), dataset(3), tmp_path / "p.png", min_side=32)
    with Image.open(path) as im:  # 3 pairs: 2 columns of pairs, 2 rows, panels at 1x
        assert im.size == (PAD + 4 * (W + PAD), PAD + 2 * (HEADER + H + PAD))


def test_predict_files_upscales_small_images(tmp_path):
    src = tmp_path / "in" / "a.png"
    src.parent.mkdir()
    Image.fromarray(np.full((H, W, 3), 102, np.uint8)).save(src)
    logs: list[str] = []
    (out,) = predict_files(FixedModel(), [src], tmp_path / "out", ["disc", "bar"],
                           min_side=512, log=logs.append)  # fmt: skip
    with Image.open(out) as im:
        assert im.size == (W * 11, H * 11)
        drawn = np.asarray(im).astype(int)
    color = np.array(PALETTE[0])
    assert np.abs(drawn[int(20 * 11), int(40 * 11)] - (0.5 * 102 + 0.5 * color)).max() <= 1
    assert "1 detection(s)" in logs[0]
