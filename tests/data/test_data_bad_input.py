"""Bad input: structural problems raise naming file and id; defects are skipped and counted."""

import json
import logging

import cv2
import numpy as np
import pytest
from helpers.data_helpers import rect_poly, write_image

from detnorm.data.coco import CocoInstanceDataset
from detnorm.data.image_check import BadImagesError
from detnorm.data.image_io import DECODERS, read_image

pytestmark = pytest.mark.bad_input

IMG = {"id": 1, "file_name": "a.png", "height": 20, "width": 30}
CAT = {"id": 1, "name": "thing"}


def _ann(aid, **kw):
    ann = {"id": aid, "image_id": 1, "category_id": 1, "iscrowd": 0,
           "segmentation": rect_poly(2, 2, 10, 10), "bbox": [2, 2, 8, 8], "area": 64}  # fmt: skip
    ann.update(kw)
    return ann


def test_missing_and_invalid_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        CocoInstanceDataset(tmp_path / "nope.json", tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad.json is not valid JSON"):
        CocoInstanceDataset(bad, tmp_path)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match=r"bad.json: missing list 'categories'"):
        CocoInstanceDataset(bad, tmp_path)


def test_unknown_image_or_category(coco_factory):
    ann, d = coco_factory([IMG], [_ann(5, image_id=99)], [CAT])
    with pytest.raises(
        ValueError, match=r"ann.json: annotation id 5 points at unknown image id 99"
    ):
        CocoInstanceDataset(ann, d)
    ann, d = coco_factory([IMG], [_ann(6, category_id=42)], [CAT])
    with pytest.raises(ValueError, match=r"annotation id 6 points at unknown category id 42"):
        CocoInstanceDataset(ann, d)
    ann, d = coco_factory([IMG, dict(IMG, file_name="b.png")], [], [CAT])
    with pytest.raises(ValueError, match="duplicate image id 1"):
        CocoInstanceDataset(ann, d)


def test_missing_image_file_fails_at_construction(coco_factory):
    ann, d = coco_factory([IMG], [_ann(1)], [CAT], write_images=False)
    with pytest.raises(BadImagesError, match=r"image id 1: .*a.png: file does not exist"):
        CocoInstanceDataset(ann, d)
    with pytest.raises(FileNotFoundError, match=r"image id 1: file .*a.png does not exist"):
        CocoInstanceDataset(ann, d, check_images=False)  # without the header check


def test_unreadable_image_fails_at_construction_naming_the_file(coco_factory):
    ann, d = coco_factory([IMG], [_ann(1)], [CAT])
    (d / "a.png").write_bytes(b"this is not a png")
    with pytest.raises(BadImagesError, match=r"image id 1: .*a.png: not an image"):
        CocoInstanceDataset(ann, d)  # the header check runs at construction
    ds = CocoInstanceDataset(ann, d, check_images=False)  # without it, decoding fails at load
    with pytest.raises(OSError, match=r"cannot read image file .*a.png"):
        ds.load_image(0)


def test_image_size_disagreeing_with_json(coco_factory):
    ann, d = coco_factory([dict(IMG, width=31)], [_ann(1)], [CAT])
    write_image(d / "a.png", 20, 30)
    with pytest.raises(BadImagesError, match=r"image id 1: .*a.png is 30x20 .* says 31x20"):
        CocoInstanceDataset(ann, d)
    with pytest.raises(ValueError, match=r"image id 1: file .*a.png is 30x20 .* says 31x20"):
        CocoInstanceDataset(ann, d, check_images=False)[0]


def test_defects_skipped_counted_and_logged_once(coco_factory, caplog):
    anns = [
        _ann(1),  # good
        _ann(2, bbox=[2, 2, 0, 5]),  # zero-area box
        _ann(3, bbox=[2, 2, -3, 5]),  # negative-area box
        _ann(4, segmentation=[[1, 1, 5, 5]], bbox=None),  # polygon with 2 points
        _ann(5, segmentation=rect_poly(40, 30, 50, 40), bbox=[40, 30, 10, 10]),  # outside
        _ann(6, bbox=[float("nan"), 2, 8, 8]),  # NaN box
        _ann(7, segmentation=[[1, 1, float("nan"), 5, 5, 5]], bbox=None),  # NaN polygon
        _ann(8, segmentation=[[1, 1, 2, 2], [2, 2, 12, 2, 12, 12]]),  # one bad part dropped
    ]
    ann, d = coco_factory([IMG], anns, [CAT])
    with caplog.at_level(logging.WARNING, logger="detnorm.data"):
        ds = CocoInstanceDataset(ann, d)
        _ = [ds[0] for _ in range(3)]
    assert ds.defects == {
        "zero/negative area boxes": 2,
        "polygons with < 3 points": 1,
        "masks/boxes outside the image": 1,
        "NaN/inf coordinates": 2,
        "polygon parts with < 3 points dropped": 1,
    }
    records = [r for r in caplog.records if r.name == "detnorm.data"]
    assert len(records) == 1 and "2 zero/negative area boxes" in records[0].getMessage()
    assert ds[0][1]["boxes"].shape == (2, 4)


@pytest.mark.parametrize("decoder", DECODERS)
def test_gray_rgba_16bit_become_rgb(tmp_path, decoder):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    out = read_image(tmp_path / "g.png", decoder)
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, 2))

    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 0  # cv2 writes BGRA
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    out = read_image(tmp_path / "a.png", decoder)
    assert out.shape == (3, 4, 3)
    np.testing.assert_array_equal(out[0, 0], [30, 20, 10])  # RGB order, alpha dropped

    deep = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 300 + 1000).astype(np.uint16)
    for name in ("d.png", "d.tif"):
        cv2.imwrite(str(tmp_path / name), deep)
        out = read_image(tmp_path / name, decoder)
        assert out.shape == (3, 4, 3) and out.dtype == np.uint8
        assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255  # min-max stretched
        expected = np.round((deep - 1000) * 255.0 / 3300).astype(np.uint8)
        np.testing.assert_array_equal(out[..., 1], expected)
