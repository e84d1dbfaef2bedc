"""Embedded default dataset: seeded procedural COCO instance segmentation ("shapes").

Six classes: circle, ellipse, rectangle, triangle, star, cross. ``render_image`` draws them
over a low-frequency colour-noise background; objects overlap, each new object drawn over the
earlier ones, and the earlier masks lose those pixels. An object keeping < 12 % of its area (or
< 6 px) is dropped from the annotations. Images are JPEG (quality 85-95); a third are portrait
and a third landscape, so aspect grouping matters. Everything is a pure function of
``(seed, split, image index)`` and the keywords.

The generator's keywords make two kinds of scene:
- ``clutter=True`` (``generate_dataset``'s default): classes told apart by shape only (fill colour
  and texture are independent of the class), many small objects (6 px up), some low-contrast,
  unannotated blobs, lines and scribbles. Hard: a CPU-sized model learns ~1 AP in minutes.
- ``clutter=False``: clean scenes, solid or gradient fills that are never low-contrast; with
  ``class_colors=True`` each class also has its own (jittered) hue.

The embedded dataset (:data:`DEFAULTS`, what ``tools/train.py`` uses without ``--data``) is
the clean, class-coloured kind: 2000 train / 200 val images of ~128 px, 2-5 objects of 16 px up
(about 7,000 training instances), generated in about 6 s. It is the task on which the main job
trains a working detector from scratch in minutes on a CPU (README, "Two commands"). The
reproduction study generates its own variant (``configs/study/study.yaml``).

Location of the default copy: ``$DETNORM_DATA/synthetic`` if that variable is set, else
``<repo>/data/synthetic`` in a writable source checkout, else ``~/.cache/detnorm/synthetic``.
Generation goes to a temporary sibling folder renamed into place, so an interrupted run never
leaves a half dataset.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .shapes import CLASS_COLORS, CLASSES, draw_background, draw_scribbles, paint, shape_mask

GENERATOR_VERSION = 2
# generate_dataset's own keyword defaults (render_image's scene options in RENDER_DEFAULTS);
# meta.json records the scene options only when they differ from these
GENERATE_DEFAULTS = {"seed": 0, "num_train": 400, "num_val": 100, "image_size": 256}
RENDER_DEFAULTS = {"objects": (4, 14), "min_object": 6, "clutter": True, "class_colors": False}
# The embedded dataset (ensure_default_dataset): clean scenes of 2-5 overlapping objects of
# 16-77 px in ~128 px images, each class with its own hue (jittered; gradient fills blend in a
# second colour), so that a CPU-sized model trained from scratch learns it in minutes.
DEFAULTS = {"seed": 0, "num_train": 2000, "num_val": 200, "image_size": 128,
            "objects": (2, 5), "min_object": 16, "clutter": False, "class_colors": True}  # fmt: skip
_ASPECTS = ((1.0, 1.0), (0.875, 1.25), (1.25, 0.875))  # (height, width) factors of the base side


def _image_hw(rng: np.random.Generator, image_size) -> tuple[int, int]:
    if isinstance(image_size, (tuple, list)):
        return int(image_size[0]), int(image_size[1])
    fh, fw = _ASPECTS[rng.integers(len(_ASPECTS))]
    return int(round(image_size * fh / 8) * 8), int(round(image_size * fw / 8) * 8)


def render_image(seed: int, split: int, index: int, image_size=256, objects=(4, 14),
                 min_object: float = 6, clutter: bool = True, class_colors: bool = False):  # fmt: skip
    """Render one image. Returns (RGB uint8 (H, W, 3), list of (class index, mask (H, W) uint8)).

    ``objects``: (fewest, most) objects drawn; ``min_object``: smallest object size in pixels
    (sizes are log-uniform from it to 60 % of the short side); ``clutter=False``: no background
    blobs, lines or scribbles, and solid or gradient fills that are never low-contrast.
    """
    rng = np.random.default_rng([seed, split, index])
    h, w = _image_hw(rng, image_size)
    image = draw_background(rng, h, w, clutter)
    owner = np.zeros((h, w), np.int16)  # which object owns each pixel (0: background)
    objects_drawn = []
    n = int(rng.integers(objects[0], objects[1] + 1))
    short = min(h, w)
    for k in range(1, n + 1):
        cls = int(rng.integers(len(CLASSES)))
        size = float(np.exp(rng.uniform(np.log(min_object), np.log(0.6 * short))))
        center = (rng.uniform(0, w), rng.uniform(0, h))
        mask = shape_mask(rng, CLASSES[cls], h, w, center, size)
        full = int(mask.sum())
        if full < 6:
            continue
        paint(rng, image, mask, clutter, CLASS_COLORS[cls] if class_colors else None)
        owner[mask.astype(bool)] = k
        objects_drawn.append((k, cls, full))
    if clutter:
        owner[draw_scribbles(rng, image)] = 0
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    image += noise * np.float32(rng.uniform(2, 10))
    image = np.clip(image, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (3, 3), 0)
    areas = np.bincount(owner.ravel(), minlength=n + 1)
    instances = []
    for k, cls, full in objects_drawn:
        if areas[k] >= max(6, 0.12 * full):
            instances.append((cls, (owner == k).view(np.uint8)))
    return image, instances


def _write_split(out: Path, split_name: str, split: int, count: int, seed: int, **render):
    images, annotations = [], []
    for i in range(count):
        image, instances = render_image(seed, split, i, **render)
        file_name = f"{split_name}/{i:06d}.jpg"
        quality = 85 + (i * 7) % 11
        cv2.imwrite(
            str(out / "images" / file_name), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality]
        )
        images.append(
            {"id": i + 1, "file_name": file_name, "height": image.shape[0], "width": image.shape[1]}
        )
        for cls, mask in instances:
            rle = mask_utils.encode(np.asfortranarray(mask))
            x, y, bw, bh = (float(v) for v in mask_utils.toBbox(rle))
            area = float(mask_utils.area(rle))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": cls + 1,
                    "segmentation": rle,
                    "area": area,
                    "bbox": [x, y, bw, bh],
                    "iscrowd": 0,
                }
            )
    categories = [
        {"id": c + 1, "name": name, "supercategory": "shape"} for c, name in enumerate(CLASSES)
    ]
    coco = {
        "info": {"description": f"detnorm synthetic shapes, seed {seed}"},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    with open(out / "annotations" / f"{split_name}.json", "w") as f:
        json.dump(coco, f)


def generate_dataset(
    root,
    *,
    seed: int = 0,
    num_train: int = 400,
    num_val: int = 100,
    image_size=256,
    objects=(4, 14),
    min_object: float = 6,
    clutter: bool = True,
    class_colors: bool = False,
) -> Path:
    """Generate the dataset atomically at ``root`` (replacing what is there); returns ``root``.

    ``image_size``: int base short side (sizes vary: square, portrait, landscape), or (H, W) to make
    every image exactly that size. ``objects``: (fewest, most) objects per image before occlusion
    drops some; ``min_object``: smallest object size in pixels. Layout:
    ``root/annotations/{train,val}.json``, ``root/images/{train,val}/NNNNNN.jpg`` (``file_name``
    relative to ``root/images``), ``root/meta.json`` (these arguments and the generator version).
    ``clutter=False`` draws clean scenes (see :func:`render_image`): a task small models learn in
    minutes on a CPU, used by the reproduction study.
    """
    if not (
        isinstance(objects, (list, tuple)) and len(objects) == 2 and 1 <= objects[0] <= objects[1]
    ):
        raise ValueError(
            f"objects must be (fewest, most) with 1 <= fewest <= most, got {objects!r}"
        )
    if not min_object >= 1:
        raise ValueError(f"min_object must be >= 1 pixel, got {min_object!r}")
    render = {"image_size": image_size, "objects": tuple(objects), "min_object": min_object,
              "clutter": bool(clutter), "class_colors": bool(class_colors)}  # fmt: skip
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        for sub in ("annotations", "images/train", "images/val"):
            (tmp / sub).mkdir(parents=True)
        _write_split(tmp, "train", 0, num_train, seed, **render)
        _write_split(tmp, "val", 1, num_val, seed, **render)
        meta = dataset_meta(seed=seed, num_train=num_train, num_val=num_val, **render)
        (tmp / "meta.json").write_text(json.dumps(meta))
        old = None
        if root.exists():
            old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(root, old)
        os.replace(tmp, root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def default_root() -> Path:
    """Where the default dataset lives (see the module docstring)."""
    env = os.environ.get("DETNORM_DATA")
    if env:
        return Path(env).expanduser() / "synthetic"
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file() and os.access(repo, os.W_OK):
        data = repo / "data"
        if not data.exists() or os.access(data, os.W_OK):
            return data / "synthetic"
    return Path.home() / ".cache" / "detnorm" / "synthetic"


def dataset_meta(**params) -> dict:
    """The ``meta.json`` that :func:`generate_dataset` writes for ``params`` (its keywords)."""
    p = GENERATE_DEFAULTS | RENDER_DEFAULTS | params
    p["objects"] = tuple(p["objects"])
    meta = {"version": GENERATOR_VERSION}
    meta |= {k: p[k] for k in ("seed", "num_train", "num_val", "image_size")}
    if {k: p[k] for k in RENDER_DEFAULTS} != RENDER_DEFAULTS:
        # only a non-default generator records these, so the embedded dataset's meta.json is as before
        meta |= {"objects": list(p["objects"]), "min_object": p["min_object"],
                 "clutter": bool(p["clutter"])}  # fmt: skip
        if p["class_colors"]:  # recorded only when set, so earlier datasets' meta.json still match
            meta["class_colors"] = True
    return json.loads(json.dumps(meta))  # lists, as read back from the file


def _is_current(root: Path, meta: dict) -> bool:
    try:
        return json.loads((root / "meta.json").read_text()) == meta
    except (OSError, ValueError):
        return False


def ensure_dataset(root, **params) -> Path:
    """Return ``root``, generating the dataset there first unless its ``meta.json`` matches
    ``params`` (:func:`generate_dataset`'s keywords; defaults: the embedded dataset).

    Safe when several processes (DDP ranks, parallel study runs) call it at once: each generates
    into its own temporary folder and only the first to finish moves its copy into place.
    """
    root = Path(root)
    meta = dataset_meta(**params)
    if _is_current(root, meta):
        return root
    staging = generate_dataset(root.parent / f".{root.name}.gen-{uuid.uuid4().hex[:8]}", **params)
    try:
        if not _is_current(root, meta):
            if root.exists():
                old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(root, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(staging, root)
    except OSError:
        if not _is_current(root, meta):  # lost a race and the winner's copy is not there either
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def ensure_default_dataset(root=None) -> Path:
    """Return the default dataset's root, generating it first if absent or outdated."""
    return ensure_dataset(root if root is not None else default_root(), **DEFAULTS)
