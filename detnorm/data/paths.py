"""Where the data is: one resolver shared by the API and the CLI.

``data=ROOT`` accepts two layouts, recognized in this order:

* detnorm: ``ROOT/annotations/train.json`` and ``ROOT/annotations/val.json``, every ``file_name``
  relative to ``ROOT/images/`` (subfolders allowed, e.g. labelme's ``JPEGImages/x.jpg``);
* COCO 2017: ``ROOT/annotations/instances_train2017.json`` with images in ``ROOT/train2017/``,
  and ``ROOT/annotations/instances_val2017.json`` with ``ROOT/val2017/``.

Explicit ``train_ann``/``train_images``/``val_ann``/``val_images`` override what the layout gives,
and without ``data`` all four must be given.
"""

from __future__ import annotations

from pathlib import Path

from detnorm.errors import ConfigError

_OPTIONS = ("train_ann", "train_images", "val_ann", "val_images")


def _layout(root: Path) -> dict[str, Path] | None:
    ann = root / "annotations"
    if (ann / "train.json").is_file() or (ann / "val.json").is_file():
        return {
            "train_ann": ann / "train.json",
            "train_images": root / "images",
            "val_ann": ann / "val.json",
            "val_images": root / "images",
        }
    if (ann / "instances_train2017.json").is_file() or (ann / "instances_val2017.json").is_file():
        return {
            "train_ann": ann / "instances_train2017.json",
            "train_images": root / "train2017",
            "val_ann": ann / "instances_val2017.json",
            "val_images": root / "val2017",
        }
    return None


def resolve_data_paths(
    data=None, train_ann=None, train_images=None, val_ann=None, val_images=None
) -> dict[str, Path]:
    """Return ``{"train_ann", "train_images", "val_ann", "val_images"}`` as existing Paths.

    Raises :class:`~detnorm.errors.ConfigError` whose ``key`` is the option at fault (``data``,
    ``train_ann``, ``train_images``, ``val_ann`` or ``val_images``) and whose message names the
    path, when a file or folder is missing or the layout of ``data`` is not recognized.
    """
    given = dict(
        train_ann=train_ann, train_images=train_images, val_ann=val_ann, val_images=val_images
    )
    paths: dict[str, Path] = {}
    if data is not None:
        root = Path(data).expanduser()
        if not root.is_dir():
            raise ConfigError("data", f"{root} is not a directory")
        layout = _layout(root)
        if layout is None and any(given[k] is None for k in _OPTIONS):
            raise ConfigError(
                "data",
                f"{root} has neither the detnorm layout (annotations/train.json, "
                "annotations/val.json, images/) nor the COCO 2017 layout "
                "(annotations/instances_{train,val}2017.json, train2017/, val2017/); "
                "give --train-ann/--train-images/--val-ann/--val-images explicitly",
            )
        paths.update(layout or {})
    for key, value in given.items():
        if value is not None:
            paths[key] = Path(value).expanduser()
    for key in _OPTIONS:
        if key not in paths:
            raise ConfigError(key, f"not given (pass data=ROOT or {key} explicitly)")
        path = paths[key]
        if key.endswith("_ann") and not path.is_file():
            raise ConfigError(key, f"annotation file {path} does not exist")
        if key.endswith("_images") and not path.is_dir():
            raise ConfigError(key, f"image folder {path} does not exist")
    return paths
