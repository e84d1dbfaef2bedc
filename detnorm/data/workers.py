"""The data loaders' worker init: ignore Ctrl+C in workers, seed them as Lightning does."""

from __future__ import annotations

import os
import signal

__all__ = ["worker_init"]


def worker_init(worker_id: int, rank: int = 0) -> None:
    """``worker_init_fn`` of detnorm's data loaders: a worker ignores SIGINT (Ctrl+C reaches the
    whole process group; the main process stops the run cleanly and ends the workers), then
    seeds itself as Lightning's own worker init does after ``seed_everything(workers=True)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        from lightning_fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id, rank=rank)
