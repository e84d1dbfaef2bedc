"""COCO reading: segmentation formats, crowd, category mapping, empty images."""

import numpy as np
import pytest
import torch
from helpers.data_helpers import rect_poly
from pycocotools import mask as mask_utils

from detnorm.data.annotations import CategoryMap
from detnorm.data.coco import CocoInstanceDataset, decode_masks

H, W = 20, 30


def _rect_mask(x0, y0, x1, y1):
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _uncompressed_rle(mask):
    flat = mask.flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    counts.append(run)
    return {"size": [H, W], "counts": [int(c) for c in counts]}


def test_three_segmentation_formats_decode_to_the_same_mask():
    mask = _rect_mask(5, 4, 15, 12)
    compressed = mask_utils.encode(np.asfortranarray(mask))
    compressed["counts"] = compressed["counts"].decode()
    decoded = decode_masks(
        [_uncompressed_rle(mask), compressed], H, W
    )  # two RLE flavours are exact
    np.testing.assert_array_equal(decoded[0], mask)
    np.testing.assert_array_equal(decoded[1], mask)
    poly = decode_masks([rect_poly(5, 4, 15, 12)], H, W)[0]  # polygon rasterization: close
    assert np.abs(poly.astype(int) - mask).sum() <= 30 and poly[6:10, 7:13].all()


def _dataset(coco_factory, **kw):
    images = [
        {"id": 7, "file_name": "sub/a.png", "height": H, "width": W},
        {"id": 8, "file_name": "b.png", "height": H, "width": W},  # crowd only
        {"id": 9, "file_name": "c.png", "height": W, "width": H},  # nothing
    ]
    mask = _rect_mask(2, 2, 10, 8)
    anns = [
        {"id": 1, "image_id": 7, "category_id": 0, "segmentation": rect_poly(1, 1, 6, 6),
         "bbox": [1, 1, 5, 5], "iscrowd": 0, "area": 25},
        {"id": 2, "image_id": 7, "category_id": 100, "segmentation": _uncompressed_rle(mask),
         "bbox": [2, 2, 8, 6], "iscrowd": 0, "area": 48},
        {"id": 3, "image_id": 7, "category_id": -5, "segmentation": _uncompressed_rle(mask),
         "bbox": [2, 2, 8, 6], "iscrowd": 1, "area": 48},
        {"id": 4, "image_id": 8, "category_id": 0, "segmentation": _uncompressed_rle(mask),
         "bbox": [2, 2, 8, 6], "iscrowd": 1, "area": 48},
    ]  # fmt: skip
    cats = [{"id": 100, "name": "c100"}, {"id": 0, "name": "zero"}, {"id": -5, "name": "neg"}]
    ann, img_dir = coco_factory(images, anns, cats)
    return CocoInstanceDataset(ann, img_dir, **kw)


def test_crowd_excluded_from_targets_and_empty_images_option(coco_factory):
    ds = _dataset(coco_factory, keep_empty=True)
    assert ds.ids == [7, 8, 9]
    image, target = ds[0]
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    assert target["image_id"] == 7 and isinstance(target["image_id"], int)
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (2, H, W)
    torch.testing.assert_close(target["boxes"], torch.tensor([[1.0, 1, 6, 6], [2, 2, 10, 8]]))
    # crowd-only image: no targets, kept because keep_empty
    assert ds[1][1]["boxes"].shape == (0, 4) and ds[1][1]["masks"].shape == (0, H, W)
    assert ds.aspect_groups() == [0, 0, 1]
    dropped = _dataset(coco_factory, keep_empty=False)
    assert dropped.ids == [7]


def test_category_mapping_both_ways(coco_factory):
    ds = _dataset(coco_factory)
    cmap = ds.category_map
    # ascending category id: -5 -> 1, 0 -> 2, 100 -> 3
    assert cmap.cat_id_to_label == {-5: 1, 0: 2, 100: 3}
    assert cmap.label_to_cat_id == {1: -5, 2: 0, 3: 100}
    assert [c["name"] for c in cmap.categories] == ["neg", "zero", "c100"]
    assert ds[0][1]["labels"].tolist() == [2, 3]
    assert all(cmap.cat_id(cmap.label(c)) == c for c in (-5, 0, 100))
    with pytest.raises(ValueError, match="label 4 outside 1..3"):
        cmap.cat_id(4)


def test_val_set_must_use_training_categories(coco_factory, tmp_path):
    ds = _dataset(coco_factory)
    other = CategoryMap([{"id": 0, "name": "zero"}])
    with pytest.raises(ValueError, match=r"category ids \[-5, 100\] are not among"):
        CocoInstanceDataset(ds.ann_file, ds.image_dir, category_map=other)


def test_seeded_key_gives_the_same_augmentation_whatever_ran_before(coco_factory):
    from detnorm.data.transforms import build_train_transform

    images = [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 6, 8],
             "segmentation": rect_poly(2, 3, 8, 11), "area": 48, "iscrowd": 0}]  # fmt: skip
    ann, image_dir = coco_factory(images, anns, [{"id": 1, "name": "a"}])
    ds = CocoInstanceDataset(ann, image_dir, transform=build_train_transform((20,), 40))
    flips = {float(ds[(0, seed)][1]["boxes"][0, 0]) for seed in range(16)}
    assert flips == {2.0, 30.0 - 8.0}  # both outcomes occur across seeds
    first = ds[(0, 7)][1]["boxes"]
    for _ in range(5):
        ds[0]  # unseeded calls advance the transform's own stream
    torch.testing.assert_close(ds[(0, 7)][1]["boxes"], first)
