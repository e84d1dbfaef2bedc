#!/usr/bin/env python
"""Evaluate a COCO results file or a checkpoint; see ``python tools/eval.py --help``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a fresh clone

from detnorm.cli.eval import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
