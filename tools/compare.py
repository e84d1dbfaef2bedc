#!/usr/bin/env python
"""Compare training runs: ``tools/compare.py RUN_DIR... [--output DIR] [--metric segm/AP]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a clone without install

from detnorm.cli.compare import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
