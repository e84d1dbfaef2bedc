"""Converters to COCO instance JSON: labelme exports and instance label images.

Both number images and annotations from 1 (pycocotools scores a detection matched to a ground
truth with id 0 as a false positive) and categories 1..K in the order given or, by default,
sorted by name. ``file_name`` is relative to ``image_root``; pass that folder as the images folder.

**labelme** (``labelme_to_coco``), following labelme's own ``labelme2coco`` example:

* ``polygon`` (>= 3 points), ``rectangle`` (two opposite corners, written as its 4 corners) and
  ``circle`` (centre, then a point on the rim; written as a polygon of
  :func:`circle_polygon` points, whose chords stay within 1 px of the arc) become polygon
  segmentations. Other shape types (line, linestrip, point, mask, ...) are skipped and counted.
* Shapes with the same label and ``group_id`` are one instance with several polygons (a
  multi-polygon instance); a shape without ``group_id`` is an instance of its own.
* ``__ignore__`` (labelme's label for regions to ignore) is never a category: each such
  instance becomes an ``iscrowd: 1`` region (compressed RLE) once per category, so COCOeval
  ignores detections of any class there and the training loader leaves it out of the targets.
* ``_background_`` is never a category: such shapes are skipped and counted, and the two
  names are dropped from a given category list (labelme's ``labels.txt`` starts with both).

**instance label images** (``instance_masks_to_coco``): each PNG/TIFF (8/16/32-bit) holds one
integer per pixel, 0 = background, each other value one instance. Masks are stored as compressed
RLE (exact). Classes come from ``class_name`` (one class) or a class map JSON object whose keys are
tried in this order for instance value ``v`` of label image ``f`` (file name as listed, e.g.
``"a.png"``)::

    {"a.png": {"1": "nucleus", "2": "cell"},   # per image, per instance value
     "b.png": "cell",                           # every instance of that image
     "3": "debris",                             # instance value 3 in every image
     "*": "cell"}                               # anything else (optional)

An instance with no class raises ``ValueError`` naming the file and value.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
IGNORE_LABEL = "__ignore__"  # labelme: a region to ignore
BACKGROUND_LABEL = "_background_"  # labelme: the background class of semantic labels


def _categories(names, given):
    if given is None:
        given = sorted(set(names))
    return [{"id": i + 1, "name": n, "supercategory": ""} for i, n in enumerate(given)]


def _polygon_ann(parts, image_id, h, w):
    rles = mask_utils.frPyObjects([list(map(float, p)) for p in parts], h, w)
    rle = mask_utils.merge(rles)
    xs = [x for p in parts for x in p[0::2]]
    ys = [y for p in parts for y in p[1::2]]
    return {
        "image_id": image_id,
        "segmentation": [list(map(float, p)) for p in parts],
        "area": float(mask_utils.area(rle)),
        "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
        "iscrowd": 0,
    }


def _crowd_ann(parts, image_id, h, w):
    """An ``iscrowd: 1`` region covering the union of polygons ``parts``, as compressed RLE."""
    rle = mask_utils.merge(mask_utils.frPyObjects([list(map(float, p)) for p in parts], h, w))
    box = [float(v) for v in mask_utils.toBbox(rle)]
    area = float(mask_utils.area(rle))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"image_id": image_id, "segmentation": rle, "area": area, "bbox": box, "iscrowd": 1}


def circle_polygon(cx: float, cy: float, radius: float) -> np.ndarray:
    """(N, 2) points on the circle, N >= 12, enough that each chord stays within 1 px of the arc.

    A chord spanning angle ``a`` lies ``r (1 - cos(a / 2))`` inside the arc, so ``N`` is the
    smallest count with ``r (1 - cos(pi / N)) <= 1``.
    """
    n = 12
    if radius > 1:
        n = max(n, math.ceil(math.pi / math.acos(1 - 1 / radius)))
    angles = np.arange(n) * (2 * math.pi / n)
    return np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)


def _shape_points(shape: dict) -> np.ndarray | str:
    """(N, 2) polygon of a labelme shape, or the reason it is skipped."""
    kind = shape.get("shape_type") or "polygon"
    try:
        pts = np.asarray(shape.get("points", []), dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        return "points not a list of [x, y]"
    if not np.isfinite(pts).all():
        return "polygon with < 3 points or NaN"
    if kind == "rectangle":  # two opposite corners (or all four)
        if len(pts) < 2:
            return "rectangle with < 2 points"
        (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    elif kind == "circle":
        if len(pts) != 2:
            return "circle without exactly 2 points"
        radius = float(np.hypot(*(pts[1] - pts[0])))
        if radius < 0.5:
            return "circle with radius < 0.5 px"
        pts = circle_polygon(pts[0, 0], pts[0, 1], radius)
    elif kind != "polygon":
        return f"shape_type {kind!r}"
    if len(pts) < 3:
        return "polygon with < 3 points or NaN"
    return pts


def labelme_to_coco(inputs, *, image_root=None, categories=None) -> tuple[dict, Counter]:
    """Convert labelme JSON files (a folder, or a list of files) to a COCO dict.

    ``image_root`` (default: the folder, or the first file's folder) is what ``file_name`` is
    made relative to. ``categories``: ordered label names; a label outside it raises.
    Returns ``(coco_dict, skipped)`` where ``skipped`` counts shapes not converted by reason.
    ``__ignore__`` regions are the annotations with ``iscrowd: 1`` (one per category).
    """
    if isinstance(inputs, (str, os.PathLike)) and not Path(inputs).exists():
        raise ValueError(f"labelme input {inputs}: no such file or folder")
    if isinstance(inputs, (str, os.PathLike)) and Path(inputs).is_dir():
        folder = Path(inputs)
        files = sorted(folder.rglob("*.json"))
    else:
        files = [Path(f) for f in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
        folder = files[0].parent if files else Path(".")
    if not files:
        raise ValueError(f"no labelme .json files found in {inputs}")
    image_root = Path(image_root) if image_root is not None else folder
    images, pending, ignored, skipped = [], [], [], Counter()
    for image_id, path in enumerate(files, start=1):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"labelme file {path}: cannot read JSON: {exc}") from exc
        if "imagePath" not in doc or "shapes" not in doc:
            raise ValueError(f"labelme file {path}: missing 'imagePath' or 'shapes'")
        image_path = (path.parent / doc["imagePath"]).resolve()
        if not image_path.is_file():
            raise FileNotFoundError(f"labelme file {path}: image {image_path} does not exist")
        h, w = doc.get("imageHeight"), doc.get("imageWidth")
        if not h or not w:
            from PIL import Image

            with Image.open(image_path) as im:
                w, h = im.size
        rel = os.path.relpath(image_path, image_root.resolve()).replace(os.sep, "/")
        images.append({"id": image_id, "file_name": rel, "height": int(h), "width": int(w)})
        groups: dict = {}
        for i, shape in enumerate(doc["shapes"]):
            label = shape.get("label")
            if not isinstance(label, str) or not label:
                skipped["shape without a label"] += 1
                continue
            if label == BACKGROUND_LABEL:
                skipped[f"label {BACKGROUND_LABEL!r}"] += 1
                continue
            pts = _shape_points(shape)
            if isinstance(pts, str):
                skipped[pts] += 1
                continue
            gid = shape.get("group_id")
            key = (label, gid) if gid is not None else (label, f"shape{i}")
            groups.setdefault(key, []).append(pts.reshape(-1).tolist())
        for (label, _), parts in groups.items():
            if label == IGNORE_LABEL:
                ignored.append(_crowd_ann(parts, image_id, int(h), int(w)))
            else:
                pending.append((label, _polygon_ann(parts, image_id, int(h), int(w)), path))
    if categories is not None:
        categories = [c for c in categories if c not in (IGNORE_LABEL, BACKGROUND_LABEL)]
    cats = _categories([p[0] for p in pending], categories)
    name_to_id = {c["name"]: c["id"] for c in cats}
    annotations = []
    for label, ann, path in pending:
        if label not in name_to_id:
            raise ValueError(f"labelme file {path}: label {label!r} not in categories {categories}")
        annotations.append({"id": len(annotations) + 1, "category_id": name_to_id[label], **ann})
    for region in ignored:  # one crowd region per category: COCOeval matches within a category
        for cat in cats:
            annotations.append({"id": len(annotations) + 1, "category_id": cat["id"], **region})
    if ignored and not cats:
        skipped[f"{IGNORE_LABEL!r} region in a file set with no category"] += len(ignored)
    coco = {"images": images, "annotations": annotations, "categories": cats}
    return coco, skipped


def _read_label_image(path: Path) -> np.ndarray:
    import cv2

    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None:
        from PIL import Image

        try:
            with Image.open(path) as im:
                labels = np.array(im)
        except OSError as exc:
            raise OSError(f"cannot read label image {path}: {exc}") from exc
    if labels.ndim == 3:
        if not (labels == labels[:, :, :1]).all():
            raise ValueError(f"label image {path} has several different channels; need one")
        labels = labels[:, :, 0]
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"label image {path} has dtype {labels.dtype}; need integers")
    return labels


def _find_image(images_dir: Path, stem: str, mask_path: Path) -> Path:
    for ext in IMAGE_EXTS:
        for cand in (images_dir / (stem + ext), images_dir / (stem + ext.upper())):
            if cand.is_file() and cand.resolve() != mask_path.resolve():
                return cand
    raise FileNotFoundError(f"label image {mask_path}: no image named {stem}.* in {images_dir}")


def _class_of(class_map, fname, value, path):
    entry = class_map.get(fname)
    if isinstance(entry, dict) and str(value) in entry:
        return entry[str(value)]
    if isinstance(entry, str):
        return entry
    for key in (str(value), "*"):
        if isinstance(class_map.get(key), str):
            return class_map[key]
    raise ValueError(f"label image {path}: instance value {value} has no class in the class map")


def instance_masks_to_coco(
    masks_dir, images_dir, *, class_map=None, class_name="object", categories=None,
    mask_suffix="", image_root=None,
) -> dict:  # fmt: skip
    """Convert a folder of instance label images to a COCO dict.

    Each label file ``<stem><mask_suffix>.<png|tif|tiff>`` in ``masks_dir`` pairs with the image
    ``<stem>.<ext>`` in ``images_dir``; ``file_name`` is relative to ``image_root``
    (default ``images_dir``). ``class_map``: dict or path to a JSON file (format in the module
    docstring); without it every instance is ``class_name``.
    """
    masks_dir, images_dir = Path(masks_dir), Path(images_dir)
    image_root = Path(image_root) if image_root is not None else images_dir
    if isinstance(class_map, (str, os.PathLike)):
        try:
            class_map = json.loads(Path(class_map).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"class map {class_map}: cannot read JSON: {exc}") from exc
    files = sorted(
        p for p in masks_dir.iterdir()
        if p.suffix.lower() in (".png", ".tif", ".tiff") and p.stem.endswith(mask_suffix)
    )  # fmt: skip
    if not files:
        raise ValueError(f"no label images (*.png, *.tif) in {masks_dir}")
    images, pending = [], []
    for image_id, path in enumerate(files, start=1):
        labels = _read_label_image(path)
        stem = path.stem[: len(path.stem) - len(mask_suffix)] if mask_suffix else path.stem
        image_path = _find_image(images_dir, stem, path)
        h, w = labels.shape
        rel = os.path.relpath(image_path.resolve(), image_root.resolve()).replace(os.sep, "/")
        images.append({"id": image_id, "file_name": rel, "height": h, "width": w})
        for value in np.unique(labels):
            if value == 0:
                continue
            name = class_name if class_map is None else _class_of(class_map, path.name, value, path)
            rle = mask_utils.encode(np.asfortranarray((labels == value).astype(np.uint8)))
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
            area = float(mask_utils.area(rle))
            rle["counts"] = rle["counts"].decode("ascii")
            ann = {"image_id": image_id, "segmentation": rle, "area": area, "bbox": bbox}
            pending.append((name, dict(ann, iscrowd=0)))
    cats = _categories([p[0] for p in pending] or [class_name], categories)
    name_to_id = {c["name"]: c["id"] for c in cats}
    annotations = []
    for name, ann in pending:
        if name not in name_to_id:
            raise ValueError(f"class {name!r} from the class map is not in categories {categories}")
        annotations.append({"id": len(annotations) + 1, "category_id": name_to_id[name], **ann})
    return {"images": images, "annotations": annotations, "categories": cats}


def write_coco(path, coco: dict) -> Path:
    """Write a COCO dict as JSON atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(coco))
    os.replace(tmp, path)
    return path
