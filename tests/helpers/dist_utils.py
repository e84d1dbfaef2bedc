"""Run a function in N gloo processes on CPU, for tests of distributed code.

    results = run_distributed(fn, world_size=2, args=(x,), timeout=60.0)

``fn(rank, world_size, *args)`` runs in ``world_size`` fresh processes (torch.multiprocessing,
"spawn" start method) after ``torch.distributed.init_process_group("gloo")`` on a free localhost
TCP port; ``results[r]`` is what rank ``r`` returned. ``fn`` and its arguments and results must be
picklable: define ``fn`` at module level in an importable module (a test file is fine).

* An exception in any rank is re-raised in the caller as ``DistributedError`` with the rank's
  traceback, and the other ranks are terminated.
* If any rank has not reported after ``timeout`` seconds (e.g. a collective deadlock), every rank
  is terminated and ``TimeoutError`` names the ranks that did not report. The gloo process group
  uses the same timeout, so a rank blocked in a collective also fails on its own.
"""

from __future__ import annotations

import os
import pickle
import queue
import socket
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["DistributedError", "free_port", "run_distributed"]


class DistributedError(RuntimeError):
    """A rank of ``run_distributed`` raised; the message holds its traceback."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free when checked."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, timeout, fn, args, results) -> None:
    # Results travel as pickled bytes: torch's queue reducers would move tensors through shared
    # memory, which needs the producer alive until the consumer has read them.
    torch.set_num_threads(1)
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout),
        )
        try:
            out = fn(rank, world_size, *args)
        finally:
            dist.destroy_process_group()
        results.put((rank, True, pickle.dumps(out)))
    except BaseException:
        results.put((rank, False, traceback.format_exc()))


def run_distributed(
    fn: Callable[..., Any],
    world_size: int = 2,
    args: tuple = (),
    timeout: float = 60.0,
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` gloo processes; return the results
    ordered by rank. Raises ``DistributedError`` or ``TimeoutError`` (see the module docstring)."""
    if world_size < 1:
        raise ValueError(f"run_distributed: world_size must be >= 1, got {world_size}")
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(
            target=_worker,
            args=(rank, world_size, port, timeout, fn, args, results),
            daemon=True,
        )
        for rank in range(world_size)
    ]
    env_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # children inherit it; keeps N processes light
    try:
        for p in procs:
            p.start()
    finally:
        if env_threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_threads
    outputs: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(outputs) < world_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(set(range(world_size)) - set(outputs))
                raise TimeoutError(
                    f"run_distributed({getattr(fn, '__name__', fn)}): ranks {missing} did not "
                    f"finish within {timeout:.0f} s (deadlock in a collective?)"
                )
            try:
                rank, ok, payload = results.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                dead = [
                    r
                    for r, p in enumerate(procs)
                    if r not in outputs and p.exitcode not in (None, 0)
                ]
                if dead:
                    raise DistributedError(
                        f"run_distributed: rank(s) {dead} exited with code "
                        f"{[procs[r].exitcode for r in dead]} without reporting"
                    ) from None
                continue
            if not ok:
                raise DistributedError(f"rank {rank} of {world_size} raised:\n{payload}")
            outputs[rank] = pickle.loads(payload)
    finally:
        for p in procs:
            if p.is_alive() and len(outputs) < world_size:
                p.terminate()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
        results.close()
    return [outputs[r] for r in range(world_size)]
