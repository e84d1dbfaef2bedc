"""labelme and instance-label-image converters: valid COCO that scores 100 AP against itself."""

import json

import cv2
import numpy as np
import pytest
from helpers.data_helpers import gt_as_predictions_ap, load_tool, write_image
from pycocotools.coco import COCO

from detnorm.data.coco import CocoInstanceDataset
from detnorm.data.convert import instance_masks_to_coco, labelme_to_coco


def _labelme(path, image_path, shapes, h=60, w=80):
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"imagePath": image_path, "imageHeight": h, "imageWidth": w, "shapes": shapes}
    path.write_text(json.dumps(doc))


def _shape(label, points, kind="polygon", group_id=None):
    return {"label": label, "points": points, "shape_type": kind, "group_id": group_id}


@pytest.fixture
def labelme_dir(tmp_path):
    write_image(tmp_path / "JPEGImages" / "a.jpg", 60, 80)
    write_image(tmp_path / "JPEGImages" / "b.jpg", 60, 80)
    _labelme(
        tmp_path / "ann" / "a.json",
        "../JPEGImages/a.jpg",
        [
            _shape("dog", [[5, 5], [30, 5], [18, 25]]),
            _shape("cat", [[40, 10], [70, 40]], "rectangle"),
            _shape("dog", [[2, 40], [12, 40], [12, 55]], group_id=1),  # two parts, one dog
            _shape("dog", [[20, 40], [30, 40], [30, 55], [20, 55]], group_id=1),
            _shape("cat", [[1, 1]], "point"),
        ],
    )
    _labelme(tmp_path / "ann" / "b.json", "../JPEGImages/b.jpg", [_shape("cat", [[0, 0], [2, 2]])])
    return tmp_path


def test_labelme_to_coco_scores_100(labelme_dir):
    coco, skipped = labelme_to_coco(labelme_dir / "ann", image_root=labelme_dir)
    assert skipped == {"shape_type 'point'": 1, "polygon with < 3 points or NaN": 1}
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog"]  # sorted by name
    assert [i["file_name"] for i in coco["images"]] == ["JPEGImages/a.jpg", "JPEGImages/b.jpg"]
    anns = coco["annotations"]
    assert [a["id"] for a in anns] == [1, 2, 3]  # ids start at 1
    assert [a["category_id"] for a in anns] == [2, 1, 2]
    assert len(anns[2]["segmentation"]) == 2  # grouped parts merged into one instance
    assert anns[1]["bbox"] == [40, 10, 30, 30]
    path = labelme_dir / "out.json"
    path.write_text(json.dumps(coco))
    ap = gt_as_predictions_ap(path)
    assert ap["bbox"] == pytest.approx(1.0) and ap["segm"] == pytest.approx(1.0)
    ds = CocoInstanceDataset(path, labelme_dir)  # file_name with a subfolder loads
    assert ds[0][1]["labels"].tolist() == [2, 1, 2]


def test_labelme_given_categories_and_tool(labelme_dir, capsys):
    main = load_tool("convert_labelme").main

    out = labelme_dir / "coco.json"
    assert main([str(labelme_dir / "ann"), "-o", str(out), "--image-root", str(labelme_dir),
                 "--labels", "dog,cat"]) == 0  # fmt: skip
    coco = COCO(str(out))
    assert [coco.cats[i]["name"] for i in (1, 2)] == ["dog", "cat"]
    assert "skipped 1 shapes" in capsys.readouterr().out
    assert main([str(labelme_dir / "ann"), "-o", str(out), "--labels", "dog"]) == 2
    assert "label 'cat' not in categories" in capsys.readouterr().err


@pytest.fixture
def label_images(tmp_path):
    (tmp_path / "masks").mkdir()
    a = np.zeros((40, 50), np.uint16)
    a[2:10, 3:20] = 3
    a[20:35, 10:15] = 700  # a value above 255 needs the 16-bit file
    a[20:25, 30:45] = 700  # and one instance may have two pieces
    cv2.imwrite(str(tmp_path / "masks" / "a_mask.png"), a)
    b = np.zeros((30, 30), np.uint8)
    b[5:25, 5:25] = 1
    b[10:15, 10:15] = 2  # instance 2 inside instance 1
    cv2.imwrite(str(tmp_path / "masks" / "b_mask.tif"), b)
    write_image(tmp_path / "images" / "a.jpg", 40, 50)
    write_image(tmp_path / "images" / "b.png", 30, 30)
    return tmp_path


def test_instance_masks_one_class_scores_100(label_images):
    coco = instance_masks_to_coco(
        label_images / "masks", label_images / "images", mask_suffix="_mask", class_name="cell"
    )
    assert [c["name"] for c in coco["categories"]] == ["cell"]
    assert [i["file_name"] for i in coco["images"]] == ["a.jpg", "b.png"]
    assert [a["area"] for a in coco["annotations"]] == [136, 75 + 75, 400 - 25, 25]
    assert [a["id"] for a in coco["annotations"]] == [1, 2, 3, 4]
    path = label_images / "out.json"
    path.write_text(json.dumps(coco))
    ap = gt_as_predictions_ap(path)
    assert ap["bbox"] == pytest.approx(1.0) and ap["segm"] == pytest.approx(1.0)
    _, target = CocoInstanceDataset(path, label_images / "images")[0]
    assert target["masks"].sum().item() == 136 + 150


def test_instance_masks_class_map_and_tool(label_images, capsys):
    main = load_tool("convert_instance_masks").main

    cmap = label_images / "classes.json"
    cmap.write_text(json.dumps({"a_mask.png": {"3": "nucleus"}, "2": "debris", "*": "cell"}))
    out = label_images / "coco.json"
    args = [str(label_images / "masks"), "--images", str(label_images / "images"), "-o", str(out)]
    assert main([*args, "--mask-suffix", "_mask", "--class-map", str(cmap)]) == 0
    coco = json.loads(out.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert [names[a["category_id"]] for a in coco["annotations"]] == [
        "nucleus", "cell", "cell", "debris"]  # fmt: skip
    assert gt_as_predictions_ap(out)["segm"] == pytest.approx(1.0)
    cmap.write_text(json.dumps({"2": "debris"}))
    assert main([*args, "--mask-suffix", "_mask", "--class-map", str(cmap)]) == 2
    assert "a_mask.png: instance value 3 has no class" in capsys.readouterr().err
