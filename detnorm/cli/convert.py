"""``detnorm-convert-labelme`` and ``detnorm-convert-masks``: annotations -> one COCO JSON.

    detnorm-convert-labelme LABELME_DIR -o annotations/train.json [--image-root DIR]
        [--labels cat,dog | --labels-file labels.txt]
    detnorm-convert-masks MASKS_DIR --images IMAGES_DIR -o annotations/train.json
        [--class-map map.json | --class-name cell] [--mask-suffix _mask]

The conversions and their conventions are in :mod:`detnorm.data.convert`. Bad input exits with
code 2 and one line naming the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detnorm.data.convert import IGNORE_LABEL, instance_masks_to_coco, labelme_to_coco, write_coco


def _names(coco: dict) -> list[str]:
    return [c["name"] for c in coco["categories"]]


def labelme_main(argv: list[str] | None = None) -> int:
    """Entry point of ``detnorm-convert-labelme`` and ``tools/convert_labelme.py``."""
    parser = argparse.ArgumentParser(
        prog="detnorm-convert-labelme",
        description="Convert labelme JSON annotations (polygons, rectangles, circles) to one "
        "COCO instances file; '__ignore__' shapes become iscrowd regions.",
    )
    parser.add_argument("input", help="folder of labelme .json files (searched recursively)")
    parser.add_argument("-o", "--output", required=True, help="COCO JSON to write")
    parser.add_argument("--image-root", help="folder file_name is relative to (default: input)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--labels", help="comma-separated category names, in id order")
    group.add_argument("--labels-file", help="text file with one category name per line "
                       "(labelme's labels.txt; __ignore__ and _background_ lines are dropped)")  # fmt: skip
    args = parser.parse_args(argv)
    categories = None
    try:
        if args.labels:
            categories = [s.strip() for s in args.labels.split(",") if s.strip()]
        elif args.labels_file:
            lines = Path(args.labels_file).read_text(encoding="utf-8").splitlines()
            categories = [s.strip() for s in lines if s.strip()]
        coco, skipped = labelme_to_coco(
            args.input, image_root=args.image_root, categories=categories
        )
    except (ValueError, OSError) as exc:
        print(f"detnorm-convert-labelme: error: {exc}", file=sys.stderr)
        return 2
    write_coco(args.output, coco)
    crowd = sum(a["iscrowd"] for a in coco["annotations"])
    print(
        f"wrote {args.output}: {len(coco['images'])} images, {len(coco['annotations']) - crowd} "
        f"annotations, categories {_names(coco)}"
    )
    if crowd:
        regions = crowd // max(1, len(coco["categories"]))
        print(f"{regions} {IGNORE_LABEL!r} regions written as iscrowd: 1 (one per category)")
    for reason, n in sorted(skipped.items()):
        print(f"skipped {n} shapes: {reason}")
    return 0


def masks_main(argv: list[str] | None = None) -> int:
    """Entry point of ``detnorm-convert-masks`` and ``tools/convert_instance_masks.py``."""
    parser = argparse.ArgumentParser(
        prog="detnorm-convert-masks",
        description="Convert instance label images (PNG/TIFF, one integer per instance) to a "
        "COCO instances file.",
        epilog="Class map format: see detnorm.data.convert (keys: label file name, instance "
        "value, or '*').",
    )
    parser.add_argument("masks", help="folder of label images")
    parser.add_argument("--images", required=True, help="folder of the matching images")
    parser.add_argument("-o", "--output", required=True, help="COCO JSON to write")
    parser.add_argument("--class-map", help="JSON class map (per file / per value / '*')")
    parser.add_argument("--class-name", default="object", help="the class without a class map")
    parser.add_argument("--mask-suffix", default="", help="suffix of label file stems, e.g. _mask")
    parser.add_argument("--image-root", help="folder file_name is relative to (default: --images)")
    args = parser.parse_args(argv)
    try:
        coco = instance_masks_to_coco(
            args.masks,
            args.images,
            class_map=args.class_map,
            class_name=args.class_name,
            mask_suffix=args.mask_suffix,
            image_root=args.image_root,
        )
    except (ValueError, OSError) as exc:
        print(f"detnorm-convert-masks: error: {exc}", file=sys.stderr)
        return 2
    write_coco(args.output, coco)
    print(
        f"wrote {args.output}: {len(coco['images'])} images, {len(coco['annotations'])} "
        f"instances, categories {_names(coco)}"
    )
    return 0
