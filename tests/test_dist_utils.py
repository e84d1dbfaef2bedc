"""tests/helpers/dist_utils.run_distributed, the spawn helper of the multi-process tests: a rank's
exception reaches the caller with its rank, and a deadlock ends in a TimeoutError."""

from __future__ import annotations

import time

import pytest
import torch.distributed as dist
from helpers.dist_utils import DistributedError, run_distributed


def _raise_on_rank1(rank, world_size):
    if rank == 1:
        raise KeyError("boom from rank 1")
    return rank


def _rank1_never_joins(rank, world_size):
    if rank == 1:
        time.sleep(120)
    dist.barrier()


def test_run_distributed_propagates_exceptions():
    with pytest.raises(DistributedError, match="(?s)rank 1 of 2.*boom from rank 1"):
        run_distributed(_raise_on_rank1, 2, timeout=60)


def test_run_distributed_times_out_on_deadlock():
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"ranks \[\d"):
        run_distributed(_rank1_never_joins, 2, timeout=8)
    assert time.monotonic() - t0 < 25
