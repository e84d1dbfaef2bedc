"""Convert instance label images (PNG/TIFF, one integer per instance) to a COCO instances file.

    python tools/convert_instance_masks.py MASKS_DIR --images IMAGES_DIR -o annotations/train.json
        [--class-map map.json | --class-name cell] [--mask-suffix _mask]

Class map format: see ``detnorm.data.convert`` (keys: label file name, instance value, or "*").
"""

from __future__ import annotations

import argparse
import sys

from detnorm.data.convert import instance_masks_to_coco, write_coco


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_coco(args.output, coco)
    print(
        f"wrote {args.output}: {len(coco['images'])} images, {len(coco['annotations'])} "
        f"instances, categories {[c['name'] for c in coco['categories']]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
