#!/usr/bin/env python
"""Error analysis of a run: ``tools/analyze.py RUN_DIR [--worst N] [--output-dir DIR]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a clone without install

from detnorm.cli.analyze import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
