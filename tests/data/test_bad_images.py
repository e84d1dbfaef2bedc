"""Bad image files: the setup-time header check (one summary, --skip-bad-images, cache, progress),
decode-time failures (replaced in training, no detections in evaluation), sizes that disagree
with the annotation (EXIF orientation named), and per-annotation defects named by id."""

import logging
import struct

import cv2
import numpy as np
import pytest
import torch
from helpers.data_helpers import rect_poly
from PIL import Image

from detnorm.data import image_check
from detnorm.data.coco import CocoInstanceDataset
from detnorm.data.image_check import BadImagesError, check_images, probe
from detnorm.data.transforms import build_train_transform

pytestmark = pytest.mark.bad_input

CAT = {"id": 1, "name": "thing"}


def _img(i, name, w=30, h=20):
    return {"id": i, "file_name": name, "width": w, "height": h}


def _ann(aid, image_id, **kw):
    ann = {"id": aid, "image_id": image_id, "category_id": 1, "iscrowd": 0,
           "segmentation": rect_poly(2, 2, 10, 10), "bbox": [2, 2, 8, 8], "area": 64}  # fmt: skip
    ann.update(kw)
    return ann


def _noise(h, w, seed):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)


def write_bad_files(d):
    """Four kinds of broken files in ``d``; returns their names by kind."""
    cv2.imwrite(str(d / "ok.jpg"), _noise(20, 30, 0))
    data = (d / "ok.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])  # header fine, data cut off
    (d / "zero.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("this is a text file, not a JPEG\n")
    cv2.imwrite(str(d / "ok.png"), _noise(20, 30, 1))
    png = bytearray((d / "ok.png").read_bytes())
    i = png.find(b"IDAT")
    (length,) = struct.unpack(">I", png[i - 4 : i])
    png[i + 4 + length] ^= 0xFF  # flip a byte of the IDAT chunk's CRC
    (d / "badcrc.png").write_bytes(bytes(png))
    return {"truncated": "truncated.jpg", "zero": "zero.jpg", "text": "text.jpg",
            "crc": "badcrc.png"}  # fmt: skip


@pytest.fixture
def bad_set(coco_factory, tmp_path):
    """A set whose images 2..4 fail the header check and image 5 only fails to decode."""
    images = [_img(1, "ok.jpg"), _img(2, "zero.jpg"), _img(3, "text.jpg"), _img(4, "badcrc.png"),
              _img(5, "truncated.jpg"), _img(6, "ok.png")]  # fmt: skip
    anns = [_ann(10 + i, i) for i in range(1, 7)]
    ann, d = coco_factory(images, anns, [CAT], write_images=False)
    d.mkdir()
    write_bad_files(d)
    return ann, d


def test_header_check_reports_every_unreadable_file_at_once(bad_set):
    ann, d = bad_set
    with pytest.raises(BadImagesError) as info:
        CocoInstanceDataset(ann, d, name="train")
    lines = str(info.value).splitlines()
    assert "3 of 6 train images cannot be read" in lines[0] and "--skip-bad-images" in lines[0]
    assert lines[1:] == [
        f"  image id 2: {d / 'zero.jpg'}: empty file",
        f"  image id 3: {d / 'text.jpg'}: not an image PIL can identify",
        f"  image id 4: {d / 'badcrc.png'}: broken file (SyntaxError: broken PNG file (bad "
        "header checksum in b'IDAT'))",
    ]


def test_skip_bad_images_drops_and_counts_them(bad_set, caplog):
    ann, d = bad_set
    with caplog.at_level(logging.WARNING, logger="detnorm.data"):
        ds = CocoInstanceDataset(ann, d, name="train", skip_bad_images=True)
    assert ds.ids == [1, 5, 6]  # the truncated JPEG passes the header check
    assert [(i, why) for i, _, why in ds.skipped_images] == [
        (2, "empty file"), (3, "not an image PIL can identify"),
        (4, "broken file (SyntaxError: broken PNG file (bad header checksum in b'IDAT'))"),
    ]  # fmt: skip
    messages = [r.getMessage() for r in caplog.records if "skipped 3 unreadable" in r.getMessage()]
    assert len(messages) == 1 and "id 2 (empty file)" in messages[0]


def test_decode_failure_in_training_is_replaced_by_the_same_aspect_group(bad_set):
    ann, d = bad_set
    transform = build_train_transform((24,), 40)
    ds = CocoInstanceDataset(ann, d, transform=transform, skip_bad_images=True)
    idx = ds.ids.index(5)  # truncated.jpg; the next landscape image is ok.png (index 2)
    image, target = ds[(idx, 123)]
    assert [s["image_id"] for s in target["undecodable"]] == [5]
    assert "truncated" in target["undecodable"][0]["reason"]
    ref_image, ref_target = ds[(ds.ids.index(6), 123)]  # the replacement loaded directly
    assert target["image_id"] == ref_target["image_id"] == 6
    assert torch.equal(image, ref_image) and torch.equal(target["boxes"], ref_target["boxes"])
    assert "undecodable" not in ref_target


def test_decode_failure_in_evaluation_is_an_image_without_objects(bad_set):
    ann, d = bad_set
    ds = CocoInstanceDataset(ann, d, skip_bad_images=True)  # no transform: evaluation
    image, target = ds[ds.ids.index(5)]
    assert target["image_id"] == 5 and target["undecodable"][0]["image_id"] == 5
    assert image.shape == (3, 1, 1) and target["boxes"].shape == (0, 4)


def test_header_check_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(paths[-1], _noise(8, 8, i))
    calls = []
    real = image_check.probe
    monkeypatch.setattr(image_check, "probe", lambda p: calls.append(p) or real(p))
    first, read = check_images(paths, ann_file=tmp_path / "a.json")
    assert read == 3 and sorted(calls) == sorted(paths)
    second, read = check_images(paths, ann_file=tmp_path / "a.json")
    assert read == 0 and second == first and len(calls) == 3
    cv2.imwrite(paths[1], _noise(8, 9, 5))  # a changed file is checked again, alone
    third, read = check_images(paths, ann_file=tmp_path / "a.json")
    assert read == 1 and calls[-1] == paths[1] and (third[1].width, third[1].height) == (9, 8)


def test_large_sets_show_a_progress_bar(tmp_path, monkeypatch, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), _noise(8, 8, 0))
    monkeypatch.setattr(image_check, "PROGRESS_FROM", 1)
    check_images([str(tmp_path / "a.png")] * 2, ann_file=tmp_path / "b.json", name="val")
    assert "checking val images" in capsys.readouterr().err


def test_more_than_twenty_bad_files_are_counted():
    e = BadImagesError("25 images cannot be read:", [f"  image id {i}: x" for i in range(25)])
    lines = str(e).splitlines()
    assert len(lines) == 22 and lines[-1] == "  ... and 5 more"


def _exif_image(path, w, h, orientation):
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    Image.fromarray(_noise(h, w, 2)).save(path, exif=exif)


@pytest.mark.parametrize("ext, orientation", [("jpg", 6), ("png", 6), ("jpg", None)])
def test_size_disagreeing_with_annotation_names_id_sizes_and_exif(coco_factory, ext, orientation):
    # stored 30x20 pixels; the annotation tool applied the EXIF rotation and wrote 20x30
    name = f"phone.{ext}"
    ann, d = coco_factory([_img(7, name, w=20, h=30)], [_ann(1, 7)], [CAT], write_images=False)
    d.mkdir()
    _exif_image(d / name, 30, 20, orientation)
    assert probe(str(d / name)).orientation == orientation
    with pytest.raises(BadImagesError) as info:
        CocoInstanceDataset(ann, d, skip_bad_images=True)  # not skippable: the labels are wrong
    msg = str(info.value)
    assert "image id 7" in msg and "is 30x20 (WxH) but the annotation says 20x30" in msg
    if orientation:
        assert "EXIF orientation tag (6: rotated 90°) explains it" in msg
    else:
        assert "no EXIF orientation tag" in msg


def test_duplicate_annotation_ids(coco_factory):
    ann, d = coco_factory([_img(1, "a.png")], [_ann(5, 1), _ann(5, 1)], [CAT])
    with pytest.raises(ValueError, match="duplicate annotation id 5"):
        CocoInstanceDataset(ann, d)


def test_bad_bbox_odd_polygon_and_rle_size_are_skipped_and_named(coco_factory, caplog):
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.ones((10, 10), np.uint8)))  # not 20x30
    rle["counts"] = rle["counts"].decode()
    anns = [
        _ann(1, 1),  # good
        _ann(2, 1, bbox=[2, 2, 8]),  # 3 numbers
        _ann(3, 1, bbox=["2", 2, 8, 8]),  # a string
        _ann(4, 1, segmentation=[[2, 2, 10, 2, 10, 10, 2]], bbox=None),  # 7 coordinates
        _ann(5, 1, segmentation=rle, bbox=None),
    ]
    ann, d = coco_factory([_img(1, "a.png")], anns, [CAT])
    with caplog.at_level(logging.WARNING, logger="detnorm.data"):
        ds = CocoInstanceDataset(ann, d)
    assert ds.defects == {"malformed bbox (not 4 numbers)": 2,
                          "polygons with an odd number of coordinates": 1,
                          "RLE size differs from the image size": 1}  # fmt: skip
    assert ds.defect_ids["malformed bbox (not 4 numbers)"] == [2, 3]
    msg = next(r.getMessage() for r in caplog.records if "skipped annotations" in r.getMessage())
    assert "2 malformed bbox (not 4 numbers) (annotation ids 2, 3)" in msg
    assert "polygons with an odd number of coordinates (annotation id 4)" in msg
    assert "RLE size differs from the image size (annotation id 5)" in msg
    assert ds[0][1]["boxes"].shape == (1, 4)
