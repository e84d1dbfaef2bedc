#!/usr/bin/env python
"""Dataset statistics: ``tools/inspect_data.py ANN.json [--images DIR] [--output-dir DIR]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a clone without install

from detnorm.cli.inspect_data import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
