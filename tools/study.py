#!/usr/bin/env python
"""The small-scale GN reproduction study: a thin shim over ``reproduction.cli.main``.

python tools/study.py run --all                              # the whole study (resumable)
python tools/study.py run --cell batch_sweep/gn_b2 --seed 0  # one cell
python tools/study.py estimate                               # time per cell (timing probe)
python tools/study.py report                                 # REPRODUCTION.md + plots
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a fresh clone

from reproduction.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
