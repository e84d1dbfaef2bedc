#!/usr/bin/env python
"""Train Mask R-CNN with a pluggable norm: a thin shim over ``detnorm.cli.train.main``.

    python tools/train.py --norm gn --max-steps 300
    python tools/train.py --config configs/coco/gn_4conv1fc_3x.yaml --data /data/coco --devices 8

See ``python tools/train.py --help`` and ``detnorm/config/options.py`` for every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone

from detnorm.cli.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
