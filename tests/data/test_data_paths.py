"""resolve_data_paths: detnorm layout, COCO 2017 layout, explicit overrides, errors."""

import pytest

from detnorm.data.paths import resolve_data_paths


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")


def test_detnorm_layout(tmp_path):
    _touch(tmp_path / "annotations" / "train.json")
    _touch(tmp_path / "annotations" / "val.json")
    (tmp_path / "images").mkdir()
    p = resolve_data_paths(tmp_path)
    assert p == {
        "train_ann": tmp_path / "annotations" / "train.json",
        "train_images": tmp_path / "images",
        "val_ann": tmp_path / "annotations" / "val.json",
        "val_images": tmp_path / "images",
    }


def test_coco2017_layout_and_overrides(tmp_path):
    _touch(tmp_path / "annotations" / "instances_train2017.json")
    _touch(tmp_path / "annotations" / "instances_val2017.json")
    (tmp_path / "train2017").mkdir()
    (tmp_path / "val2017").mkdir()
    p = resolve_data_paths(tmp_path)
    assert p["train_ann"].name == "instances_train2017.json"
    assert p["train_images"] == tmp_path / "train2017" and p["val_images"] == tmp_path / "val2017"
    _touch(tmp_path / "mini.json")
    p = resolve_data_paths(tmp_path, val_ann=tmp_path / "mini.json")
    assert p["val_ann"] == tmp_path / "mini.json" and p["val_images"] == tmp_path / "val2017"


def test_explicit_paths_without_root(tmp_path):
    _touch(tmp_path / "t.json")
    (tmp_path / "imgs").mkdir()
    p = resolve_data_paths(
        None, tmp_path / "t.json", tmp_path / "imgs", tmp_path / "t.json", tmp_path / "imgs"
    )
    assert p["train_ann"] == p["val_ann"] == tmp_path / "t.json"


def test_errors_name_option_and_path(tmp_path):
    with pytest.raises(ValueError, match=r"data: .*nope is not a directory"):
        resolve_data_paths(tmp_path / "nope")
    with pytest.raises(ValueError, match="neither the detnorm layout"):
        resolve_data_paths(tmp_path)
    _touch(tmp_path / "annotations" / "train.json")
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match=r"val_ann: annotation file .*val.json does not exist"):
        resolve_data_paths(tmp_path)
    with pytest.raises(ValueError, match=r"val_images: image folder .*missing does not exist"):
        resolve_data_paths(
            tmp_path,
            val_ann=tmp_path / "annotations" / "train.json",
            val_images=tmp_path / "missing",
        )
    with pytest.raises(ValueError, match="train_ann: not given"):
        resolve_data_paths(None)
