"""Convert labelme JSON annotations (polygons, rectangles) to one COCO instances file.

python tools/convert_labelme.py LABELME_DIR -o annotations/train.json [--image-root DIR]
    [--labels cat,dog | --labels-file labels.txt]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detnorm.data.convert import labelme_to_coco, write_coco


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="folder of labelme .json files (searched recursively)")
    parser.add_argument("-o", "--output", required=True, help="COCO JSON to write")
    parser.add_argument("--image-root", help="folder file_name is relative to (default: input)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--labels", help="comma-separated category names, in id order")
    group.add_argument("--labels-file", help="text file with one category name per line")
    args = parser.parse_args(argv)
    categories = None
    if args.labels:
        categories = [s.strip() for s in args.labels.split(",") if s.strip()]
    elif args.labels_file:
        lines = Path(args.labels_file).read_text(encoding="utf-8").splitlines()
        categories = [s.strip() for s in lines if s.strip()]
    try:
        coco, skipped = labelme_to_coco(
            args.input, image_root=args.image_root, categories=categories
        )
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_coco(args.output, coco)
    print(
        f"wrote {args.output}: {len(coco['images'])} images, {len(coco['annotations'])} "
        f"annotations, categories {[c['name'] for c in coco['categories']]}"
    )
    for reason, n in sorted(skipped.items()):
        print(f"skipped {n} shapes: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
