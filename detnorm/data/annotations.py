"""Reading and validating COCO instance JSON.

Structural problems raise immediately, naming the file and the id: a missing or invalid JSON
file, missing ``images``/``categories`` lists, duplicate image, category or annotation ids, an
annotation whose ``image_id`` or ``category_id`` is unknown. Per-annotation defects are not fatal:
``clean_annotations`` skips them and counts them by reason, with their ids (zero/negative area
boxes, a bbox that is not 4 numbers, polygons with fewer than 3 points or an odd number of
coordinates, masks outside the image, NaN coordinates, malformed segmentations, RLE of the
wrong size).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from pycocotools import mask as mask_utils


def load_coco_json(path: str | Path) -> dict:
    """Load and structurally validate a COCO instances file; returns the parsed dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"annotation file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a JSON object with images/categories")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: missing list {key!r} (a COCO instances file needs it)")
    data.setdefault("annotations", [])
    if not isinstance(data["annotations"], list):
        raise ValueError(f"{path}: 'annotations' must be a list")
    image_ids = set()
    for i, img in enumerate(data["images"]):
        for key in ("id", "file_name", "width", "height"):
            if key not in img:
                raise ValueError(f"{path}: images[{i}] (id {img.get('id')}) has no {key!r}")
        if img["id"] in image_ids:
            raise ValueError(f"{path}: duplicate image id {img['id']}")
        if not (int(img["width"]) > 0 and int(img["height"]) > 0):
            raise ValueError(f"{path}: image id {img['id']} has width/height <= 0")
        image_ids.add(img["id"])
    cat_ids = set()
    for i, cat in enumerate(data["categories"]):
        if "id" not in cat or not isinstance(cat["id"], int):
            raise ValueError(f"{path}: categories[{i}] has no integer 'id'")
        if cat["id"] in cat_ids:
            raise ValueError(f"{path}: duplicate category id {cat['id']}")
        cat_ids.add(cat["id"])
    ann_ids: set = set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise ValueError(f"{path}: annotations[{i}] is not an object")
        aid = ann.get("id", f"at index {i}")
        if "id" in ann:
            if ann["id"] in ann_ids:
                raise ValueError(f"{path}: duplicate annotation id {ann['id']}")
            ann_ids.add(ann["id"])
        if ann.get("image_id") not in image_ids:
            raise ValueError(
                f"{path}: annotation id {aid} points at unknown image id {ann.get('image_id')}"
            )
        if ann.get("category_id") not in cat_ids:
            raise ValueError(
                f"{path}: annotation id {aid} points at unknown category id "
                f"{ann.get('category_id')} (known: {sorted(cat_ids)})"
            )
    return data


class CategoryMap:
    """COCO category ids (any ints, 0 included) <-> contiguous labels 1..K (0 is background).

    Labels follow ascending category id. ``categories`` lists the category dicts in label order.
    """

    def __init__(self, categories: list[dict]):
        self.categories = sorted((dict(c) for c in categories), key=lambda c: c["id"])
        self.cat_ids = [c["id"] for c in self.categories]
        self.cat_id_to_label = {cid: i + 1 for i, cid in enumerate(self.cat_ids)}
        self.label_to_cat_id = {i + 1: cid for i, cid in enumerate(self.cat_ids)}

    @property
    def num_categories(self) -> int:
        """K: the categories, labelled 1..K."""
        return len(self.cat_ids)

    @property
    def num_classes(self) -> int:
        """K + 1: the model's classes, background included (torchvision's convention)."""
        return len(self.cat_ids) + 1

    def label(self, cat_id: int) -> int:
        return self.cat_id_to_label[cat_id]

    def cat_id(self, label: int) -> int:
        if label not in self.label_to_cat_id:
            raise ValueError(f"label {label} outside 1..{self.num_categories}")
        return self.label_to_cat_id[label]


def _finite(values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _clean_one(ann: dict, width: int, height: int, counts: Counter):
    """Return (segmentation, bbox_xyxy clipped to the image) or a defect reason string."""
    seg = ann.get("segmentation")
    bbox = ann.get("bbox")
    if bbox is not None:
        if not (isinstance(bbox, list) and len(bbox) == 4) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox
        ):
            return "malformed bbox (not 4 numbers)"
        if not _finite(bbox):
            return "NaN/inf coordinates"
        if bbox[2] <= 0 or bbox[3] <= 0:
            return "zero/negative area boxes"
    if isinstance(seg, list):
        if not all(isinstance(p, list) for p in seg):
            return "malformed segmentation"
        if not all(_finite(p) for p in seg):
            return "NaN/inf coordinates"
        if any(len(p) % 2 for p in seg):
            return "polygons with an odd number of coordinates"
        parts = [p for p in seg if len(p) >= 6]
        if not parts:
            return "polygons with < 3 points"
        if len(parts) < len(seg):
            counts["polygon parts with < 3 points dropped"] += len(seg) - len(parts)
        xs = [x for p in parts for x in p[0::2]]
        ys = [y for p in parts for y in p[1::2]]
        extent = [min(xs), min(ys), max(xs), max(ys)]
        seg = parts
    elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if list(seg["size"]) != [height, width]:
            return "RLE size differs from the image size"
        try:
            rle = (
                mask_utils.frPyObjects(seg, height, width)
                if isinstance(seg["counts"], list)
                else seg
            )
            if isinstance(rle["counts"], str):
                rle = {"size": rle["size"], "counts": rle["counts"].encode()}
            x, y, w, h = mask_utils.toBbox(rle).tolist()
        except Exception:  # pycocotools raises assorted errors on bad RLE
            return "malformed segmentation"
        if w <= 0 or h <= 0:
            return "empty masks"
        extent = [x, y, x + w, y + h]
        seg = rle
    else:
        return "missing or malformed segmentation"
    if bbox is not None:
        extent = [bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]]
    x0, y0 = max(0.0, extent[0]), max(0.0, extent[1])
    x1, y1 = min(float(width), extent[2]), min(float(height), extent[3])
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return "masks/boxes outside the image"
    return seg, [x0, y0, x1, y1]


def clean_annotations(
    data: dict, path: Path, ids: dict[str, list] | None = None
) -> tuple[dict[int, list[dict]], Counter]:
    """Usable non-crowd annotations per image id, and a Counter of skipped ones by reason.

    ``ids``, if given, receives the annotation ids skipped for each reason.

    Each kept annotation is ``{"id", "category_id", "segmentation", "bbox_xyxy"}``; compressed
    RLE counts are bytes, polygons keep only parts with >= 3 points. Crowd annotations are
    counted under "crowd (evaluation only)" but are not defects of the file.
    """
    sizes = {img["id"]: (int(img["width"]), int(img["height"])) for img in data["images"]}
    per_image: dict[int, list[dict]] = {}
    counts: Counter = Counter()
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        width, height = sizes[ann["image_id"]]
        result = _clean_one(ann, width, height, counts)
        if isinstance(result, str):
            counts[result] += 1
            if ids is not None:
                ids.setdefault(result, []).append(ann.get("id"))
            continue
        seg, box = result
        per_image.setdefault(ann["image_id"], []).append(
            {
                "id": ann.get("id"),
                "category_id": ann["category_id"],
                "segmentation": seg,
                "bbox_xyxy": box,
            }
        )
    return per_image, counts
