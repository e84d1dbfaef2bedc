"""Scale jitter and colour jitter keep image, masks and boxes consistent; both are off by default.

The reference for every box is the tight box of its own mask after the transform, computed here
with numpy (within 1 px), and the zoom itself is checked by hand on a single square.
"""

import albumentations as A
import cv2
import numpy as np
import pytest

from detnorm.data.transforms import (
    ScaleJitterResize,
    ShortestEdgeResize,
    apply_transform,
    build_train_transform,
)


def _scene(seed: int, h: int = 90, w: int = 120, n: int = 6):
    """Random ellipses: image, tight xyxy boxes (N, 4) and masks (N, H, W)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    masks = np.zeros((n, h, w), np.uint8)
    for m in masks:
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(2, w // 3)), int(rng.integers(2, h // 3)))
        cv2.ellipse(m, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return image, tight_boxes(masks), masks


def tight_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N, 4) xyxy boxes enclosing each mask's pixels (pixel edges, exclusive)."""
    out = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        out[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return out


PIPELINES = {
    "scale jitter zoom-out": dict(scale_jitter=(0.3, 0.9)),
    "scale jitter zoom-in": dict(scale_jitter=(1.1, 2.5)),
    "scale jitter both": dict(scale_jitter=(0.5, 2.0)),
    "all": dict(scale_jitter=(0.1, 2.0), color_jitter=(0.2, 0.2, 0.2, 0.05)),
}


@pytest.mark.parametrize("name", list(PIPELINES))
def test_boxes_are_tight_boxes_of_masks(name):
    """Crops cut shapes, so with scale jitter the boxes are the masks' tight boxes (exact)."""
    t = build_train_transform((64, 96), 160, **PIPELINES[name])
    kept = 0
    for seed in range(25):
        t.set_random_seed(seed)
        image, boxes, masks = _scene(seed)
        out_img, out_boxes, out_masks, keep = apply_transform(t, image, boxes, masks)
        assert out_masks.shape == (len(keep), *out_img.shape[:2])
        assert out_boxes.shape == (len(keep), 4) and len(set(keep.tolist())) == len(keep)
        if len(keep):
            np.testing.assert_allclose(out_boxes, tight_boxes(out_masks), atol=1e-6)
            assert (out_boxes[:, 2:] - out_boxes[:, :2] >= 1).all()  # degenerate ones dropped
        kept += len(keep)
    assert kept > 25  # the check ran on many instances


def test_scale_jitter_keeps_the_unjittered_size_and_zooms():
    image = np.zeros((60, 80, 3), np.uint8)
    masks = np.zeros((1, 60, 80), np.uint8)
    masks[0, 20:40, 30:50] = 1
    image[20:40, 30:50] = 255
    boxes = np.array([[30, 20, 50, 40]], np.float32)
    sizes, widths = set(), []
    for seed in range(20):
        t = build_train_transform((60,), 1000, flip_prob=0.0, scale_jitter=(0.5, 1.5))
        t.set_random_seed(seed)
        out_img, out_boxes, out_masks, keep = apply_transform(t, image, boxes, masks)
        sizes.add(out_img.shape)
        if len(keep) and out_boxes[0, 0] > 0 and out_boxes[0, 2] < 80:  # not cut by the crop
            widths.append(float(out_boxes[0, 2] - out_boxes[0, 0]))
            ys, xs = np.nonzero(out_img[..., 0] > 127)  # the bright square moved with its box
            np.testing.assert_allclose([xs.min(), xs.max() + 1], out_boxes[0, [0, 2]], atol=1.0)
    assert sizes == {(60, 80, 3)}  # cropped or padded back to the size of the plain resize
    assert min(widths) < 15 and max(widths) > 25  # 20 px square zoomed by 0.5-1.5
    assert all(10 - 1e-3 <= wd <= 30 + 1e-3 for wd in widths)


def test_zoom_out_pads_with_zeros_and_hand_computed_box():
    image = np.full((40, 40, 3), 200, np.uint8)
    masks = np.ones((1, 40, 40), np.uint8)
    boxes = np.array([[0, 0, 40, 40]], np.float32)
    t = A.Compose(
        [ScaleJitterResize((40,), 1000, 0.5, 0.5)],  # plain resize: none (40 -> 40)
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["instance_ids"]),
    )
    kernel = np.ones((3, 3), np.uint8)
    for seed in range(8):
        t.set_random_seed(seed)
        out_img, out_boxes, out_masks, _ = apply_transform(t, image, boxes, masks)
        x0, y0, x1, y1 = out_boxes[0]
        assert (x1 - x0, y1 - y0) == (20, 20)  # the whole image, halved
        assert 0 <= x0 <= 20 and 0 <= y0 <= 20
        assert out_masks[0].sum() == 400
        inside = cv2.erode(out_masks[0], kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        near = cv2.dilate(out_masks[0], kernel)
        assert (out_img[inside > 0] == 200).all() and (out_img[near == 0] == 0).all()  # zero pad


def test_color_jitter_changes_pixels_not_geometry():
    image, boxes, masks = _scene(3)
    t = build_train_transform((90,), 1000, flip_prob=0.0, color_jitter=(0.4, 0.4, 0.4, 0.1))
    t.set_random_seed(0)
    out_img, out_boxes, out_masks, keep = apply_transform(t, image, boxes, masks)
    assert keep.tolist() == list(range(len(boxes)))
    np.testing.assert_array_equal(out_masks, masks)
    np.testing.assert_allclose(out_boxes, boxes)
    assert out_img.shape == image.shape and not np.array_equal(out_img, image)


def test_default_pipeline_unchanged():
    t = build_train_transform((64, 96), 160)
    assert [type(x) for x in t.transforms] == [ShortestEdgeResize, A.HorizontalFlip]
    with pytest.raises(ValueError, match="0 < min <= max"):
        build_train_transform(scale_jitter=(2.0, 1.0))


def test_flags_reach_the_train_transform(tmp_path):
    from helpers.data_helpers import make_coco, rect_poly

    from detnorm.cli.train import parse_config
    from detnorm.config import ConfigError
    from detnorm.engine import build as training

    images = [{"id": 1, "file_name": "a.png", "height": 40, "width": 50}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": rect_poly(5, 5, 20, 20),
             "bbox": [5, 5, 15, 15], "area": 225, "iscrowd": 0}]  # fmt: skip
    ann = make_coco(tmp_path, images, anns, [{"id": 1, "name": "box"}])
    paths = ["--train-ann", str(ann), "--train-images", str(tmp_path / "images"),
             "--val-ann", str(ann), "--val-images", str(tmp_path / "images")]  # fmt: skip
    cfg = parse_config([*paths, "--scale-jitter", "0.5", "2", "--color-jitter"])
    assert cfg["scale_jitter"] == [0.5, 2.0] and cfg["color_jitter"] is True
    steps = training.build_datamodule(cfg).train_set.transform.transforms
    assert [type(x) for x in steps] == [ScaleJitterResize, A.HorizontalFlip, A.ColorJitter]
    assert (steps[0].low, steps[0].high) == (0.5, 2.0)
    cfg = parse_config([*paths, "--color-jitter", "0.1", "0.2", "0.3", "0.04"])
    jitter = training.build_datamodule(cfg).train_set.transform.transforms[-1]
    assert jitter.brightness == pytest.approx((0.9, 1.1)) and jitter.hue == pytest.approx(
        (-0.04, 0.04)
    )
    default = training.build_datamodule(parse_config(paths)).train_set.transform.transforms
    assert [type(x) for x in default] == [ShortestEdgeResize, A.HorizontalFlip]
    with pytest.raises(ConfigError) as err:
        parse_config([*paths, "--scale-jitter", "2", "1"])
    assert err.value.key == "scale_jitter" and err.value.message.startswith("must be MIN MAX")
    with pytest.raises(ConfigError) as err:
        parse_config([*paths, "--color-jitter", "0.1", "0.2"])
    assert err.value.key == "color_jitter" and err.value.message.startswith("must be")


@pytest.mark.parametrize("short", [30, 90])
def test_factor_one_equals_the_plain_resize(short):
    """Zoom 1 at offset 0 is the plain resize: one warp reproduces cv2.resize's image; masks
    (nearest, sampled at pixel centres, where cv2.resize's nearest is offset) agree to 1 px."""
    image, boxes, masks = _scene(5, h=60, w=80)
    plain = build_train_transform((short,), 1000, flip_prob=0.0)
    jitter = build_train_transform((short,), 1000, flip_prob=0.0, scale_jitter=(1.0, 1.0))
    img_a, boxes_a, masks_a, keep_a = apply_transform(plain, image, boxes, masks)
    img_b, boxes_b, masks_b, keep_b = apply_transform(jitter, image, boxes, masks)
    assert img_a.shape == img_b.shape == (short, short * 4 // 3, 3)
    assert np.abs(img_a.astype(int) - img_b.astype(int)).max() <= 1
    assert keep_a.tolist() == keep_b.tolist()
    np.testing.assert_allclose(boxes_b, tight_boxes(masks_b))
    np.testing.assert_allclose(boxes_b, boxes_a, atol=1.0)  # the plain resize's boxes
    inter = (masks_a & masks_b).sum(axis=(1, 2))
    union = (masks_a | masks_b).sum(axis=(1, 2))
    assert (inter / union > 0.8).all()
