"""Resize and flip keep image, boxes and masks consistent (hand-computed expectations)."""

import numpy as np

from detnorm.data.transforms import apply_transform, build_train_transform, image_to_tensor


def _sample():
    image = np.zeros((40, 60, 3), np.uint8)
    image[5:15, 10:30] = 200  # the object is bright, so the image must move with the mask
    masks = np.zeros((1, 40, 60), np.uint8)
    masks[0, 5:15, 10:30] = 1
    boxes = np.array([[10, 5, 30, 15]], np.float32)
    return image, boxes, masks


def test_resize_then_flip_hand_computed():
    # short side 40 -> 80: scale 2, output 80 x 120; flipped: x -> 120 - x
    image, boxes, masks = _sample()
    t = build_train_transform((80,), 1000, flip_prob=1.0)
    out_img, out_boxes, out_masks, keep = apply_transform(t, image, boxes, masks)
    assert out_img.shape == (80, 120, 3)
    np.testing.assert_allclose(out_boxes, [[60, 10, 100, 30]], atol=1e-3)
    expected = np.zeros((80, 120), np.uint8)
    expected[10:30, 60:100] = 1
    np.testing.assert_array_equal(out_masks[0], expected)
    assert (out_img[12:28, 62:98] == 200).all() and (out_img[40:, :] == 0).all()
    assert keep.tolist() == [0]


def test_long_side_cap_wins():
    # short 40 -> 80 would make the long side 120 > 90, so scale = 90 / 60 = 1.5
    image, boxes, masks = _sample()
    t = build_train_transform((80,), 90, flip_prob=0.0)
    out_img, out_boxes, out_masks, _ = apply_transform(t, image, boxes, masks)
    assert out_img.shape == (60, 90, 3)
    np.testing.assert_allclose(out_boxes, [[15, 7.5, 45, 22.5]], atol=1e-3)
    ys, xs = np.nonzero(out_masks[0])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) in {(7, 22, 15, 44), (8, 22, 15, 44)}


def test_multiscale_picks_from_train_scales():
    image, boxes, masks = _sample()
    t = build_train_transform((20, 40, 60), 1000)
    shorts = {apply_transform(t, image, boxes, masks)[0].shape[0] for _ in range(40)}
    assert shorts == {20, 40, 60}


def test_degenerate_boxes_dropped_after_resize():
    image = np.zeros((100, 100, 3), np.uint8)
    masks = np.zeros((2, 100, 100), np.uint8)
    masks[0, 10:50, 10:50] = 1
    masks[1, 60:61, 60:80] = 1  # 1 px tall: 0.2 px after scaling by 0.2
    boxes = np.array([[10, 10, 50, 50], [60, 60, 80, 61]], np.float32)
    t = build_train_transform((20,), 1000, flip_prob=0.0)
    _, out_boxes, out_masks, keep = apply_transform(t, image, boxes, masks)
    assert keep.tolist() == [0]
    assert out_boxes.shape == (1, 4) and out_masks.shape == (1, 20, 20)


def test_no_instances_and_tensor_format():
    image = np.full((30, 20, 3), 255, np.uint8)
    t = build_train_transform((40,), 1000)
    out_img, boxes, masks, keep = apply_transform(
        t, image, np.zeros((0, 4), np.float32), np.zeros((0, 30, 20), np.uint8)
    )
    assert out_img.shape == (60, 40, 3) and boxes.shape == (0, 4) and masks.shape == (0, 60, 40)
    tensor = image_to_tensor(out_img)
    assert tensor.shape == (3, 60, 40) and tensor.dtype.is_floating_point
    assert tensor.is_contiguous() and float(tensor.max()) == 1.0
