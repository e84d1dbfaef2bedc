#!/usr/bin/env python
"""Export a checkpoint: ``tools/export.py --checkpoint CKPT --format torchscript|onnx --output F``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a clone without install

from detnorm.cli.export import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
