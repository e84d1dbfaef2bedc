"""resolve_data_paths: detnorm layout, COCO 2017 layout, explicit overrides, errors."""

import re

import pytest

from detnorm.data.paths import resolve_data_paths
from detnorm.errors import ConfigError


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


def _config_error(key: str, message: str, call) -> ConfigError:
    """``call()`` raises ConfigError with ``key``; its message matches ``message`` and does not
    repeat the key (a front end adds it), and ``str(e)`` is ``"key: message"``."""
    with pytest.raises(ConfigError) as info:
        call()
    e = info.value
    assert e.key == key and isinstance(e, ValueError)
    assert re.search(message, e.message) and not e.message.startswith(f"{key}:")
    assert str(e) == f"{key}: {e.message}"
    return e


def test_errors_name_option_and_path(tmp_path):
    _config_error(
        "data", r".*nope is not a directory$", lambda: resolve_data_paths(tmp_path / "nope")
    )
    _config_error("data", "neither the detnorm layout", lambda: resolve_data_paths(tmp_path))
    _touch(tmp_path / "annotations" / "train.json")
    (tmp_path / "images").mkdir()
    _config_error(
        "val_ann",
        r"^annotation file .*val.json does not exist",
        lambda: resolve_data_paths(tmp_path),
    )
    _config_error(
        "val_images",
        r"^image folder .*missing does not exist",
        lambda: resolve_data_paths(
            tmp_path,
            val_ann=tmp_path / "annotations" / "train.json",
            val_images=tmp_path / "missing",
        ),
    )
    _config_error("train_ann", r"^not given", lambda: resolve_data_paths(None))
    _config_error(
        "train_images",
        r"^not given",
        lambda: resolve_data_paths(None, train_ann=tmp_path / "annotations" / "train.json"),
    )
    _config_error(
        "val_ann",
        r"^annotation file .*nope.json does not exist",
        lambda: resolve_data_paths(tmp_path, val_ann=tmp_path / "nope.json"),
    )
    _config_error(
        "train_images",
        r"^image folder .*gone does not exist",
        lambda: resolve_data_paths(tmp_path, train_images=tmp_path / "gone"),
    )
