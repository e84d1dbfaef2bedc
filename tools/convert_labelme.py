#!/usr/bin/env python
"""Convert labelme JSON to COCO: ``tools/convert_labelme.py LABELME_DIR -o train.json``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a clone without install

from detnorm.cli.convert import labelme_main as main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
