#!/usr/bin/env python
"""Draw predictions: ``tools/predict.py --checkpoint CKPT IMAGE_OR_DIR... --output-dir DIR``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a clone without install

from detnorm.cli.predict import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
