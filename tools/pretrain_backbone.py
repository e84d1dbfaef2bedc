#!/usr/bin/env python
"""Pretrain a ResNet backbone with any norm: a thin shim over ``detnorm.cli.pretrain.main``.

    python tools/pretrain_backbone.py --synthetic --norm gn --output-dir runs/pretrain/r18_gn
    python tools/pretrain_backbone.py --data /data/imagenet --depth 50 --norm gn \
        --image-size 224 --batch-size 256 --max-steps 450000 --output-dir runs/pretrain/r50_gn

The result loads with ``tools/train.py --backbone-norm gn --pretrained DIR/backbone.pth``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone

from detnorm.cli.pretrain import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
