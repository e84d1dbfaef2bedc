"""``detnorm-inspect``: the statistics against counts recomputed here from a random dataset."""

import json
from collections import Counter

import cv2
import numpy as np
import pytest
from PIL import Image

from detnorm.analysis.dataset_stats import dataset_stats, size_class
from detnorm.cli.inspect_data import main


def _random_coco(seed=0, n_images=12):
    rng = np.random.default_rng(seed)
    cats = [{"id": 5, "name": "cell"}, {"id": 2, "name": "nucleus"}, {"id": 9, "name": "debris"}]
    images, anns = [], []
    for i in range(1, n_images + 1):
        w, h = (int(v) for v in rng.choice([64, 100, 160], 2))
        images.append({"id": i, "file_name": f"{i}.png", "width": w, "height": h})
        for _ in range(int(rng.integers(0, 5))):  # some images get no object
            side = float(rng.choice([10, 31.9, 32, 50, 95.9, 96, 150]))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(rng.choice([5, 2, 9])),
                         "bbox": [0, 0, side, side], "area": side * side,
                         "iscrowd": int(rng.random() < 0.15)})  # fmt: skip
    return {"images": images, "annotations": anns, "categories": cats}


def test_size_class_limits_are_cocos():
    assert [size_class(a) for a in (0, 32**2 - 1, 32**2, 96**2 - 1, 96**2, 1e9)] == [
        "small", "small", "medium", "medium", "large", "large"]  # fmt: skip


def test_stats_match_recounts():
    data = _random_coco()
    s = dataset_stats(data)
    objs = [a for a in data["annotations"] if not a["iscrowd"]]
    per_image = Counter(a["image_id"] for a in objs)
    assert s["images"] == 12 and s["objects"] == len(objs)
    assert s["crowd"] == len(data["annotations"]) - len(objs) > 0
    assert s["empty_images"] == sum(per_image[img["id"]] == 0 for img in data["images"]) > 0
    assert s["objects_per_image"] == dict(
        sorted(Counter(per_image[i["id"]] for i in data["images"]).items())
    )
    for c in s["categories"]:
        mine = [a for a in objs if a["category_id"] == c["id"]]
        assert c["objects"] == len(mine)
        assert c["images"] == len({a["image_id"] for a in mine})
        assert c["crowd"] == sum(
            a["iscrowd"] and a["category_id"] == c["id"] for a in data["annotations"]
        )
        side = [np.sqrt(a["area"]) for a in mine]
        assert c["small"] == sum(v < 32 for v in side) and c["large"] == sum(v >= 96 for v in side)
        assert c["small"] + c["medium"] + c["large"] == c["objects"]
    hist = np.histogram(s["object_sqrt_areas"], bins=[0, 32, 96, 1e9])[0]
    assert hist.tolist() == [s["sizes"][k] for k in ("small", "medium", "large")]
    assert s["image_sizes"] == dict(Counter(f"{i['width']}x{i['height']}" for i in data["images"]))
    shorts = [min(i["width"], i["height"]) for i in data["images"]]
    assert s["short_side"] == [min(shorts), max(shorts)]


def test_tool_writes_tables_pngs_and_checks_files(tmp_path, capsys):
    data = _random_coco(1, n_images=4)
    folder = tmp_path / "images"
    folder.mkdir()
    for img in data["images"][:-1]:  # the last file is missing
        cv2.imwrite(
            str(folder / img["file_name"]), np.zeros((img["height"], img["width"], 3), np.uint8)
        )
    first = data["images"][0]
    cv2.imwrite(
        str(folder / first["file_name"]),
        np.zeros((first["height"] + 1, first["width"], 3), np.uint8),
    )
    ann = tmp_path / "train.json"
    ann.write_text(json.dumps(data))
    out = tmp_path / "stats"
    assert main([str(ann), "--images", str(folder), "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    stats = json.loads((out / "stats.json").read_text())
    assert stats["image_files"]["missing"] == [data["images"][-1]["file_name"]]
    assert [m["file_name"] for m in stats["image_files"]["size_mismatch"]] == [first["file_name"]]
    assert "| 4 | 1 | 0 | 1 |" in printed  # checked, missing, unreadable, size differs
    ref = dataset_stats(data)
    for c in ref["categories"]:
        row = f"| {c['id']} | {c['name']} | {c['objects']} | {c['images']} | {c['crowd']} | "
        assert row + f"{c['small']} | {c['medium']} | {c['large']} |" in printed
    assert (out / "stats.md").read_text().startswith(f"# {ann}")
    for name in ("classes", "objects_per_image", "object_sizes", "image_sizes"):
        assert Image.open(out / f"{name}.png").format == "PNG"


@pytest.mark.parametrize(
    "content, message",
    [("[1, 2]", "not a JSON object"), ('{"images": []}', "no annotations, categories"),
     ('{"images": [], "categories": [], "annotations": [{"id": 1, "image_id": 3, "category_id": 1}]}',
      "annotation 1 names unknown image 3"), ("{", "not valid JSON")],
)  # fmt: skip
def test_bad_files_one_line(tmp_path, capsys, content, message):
    ann = tmp_path / "bad.json"
    ann.write_text(content)
    assert main([str(ann), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
