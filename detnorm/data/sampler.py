"""Aspect-ratio grouped batch sampler that shards across DDP ranks and resumes mid-epoch.

Each epoch, indices are shuffled with ``torch.Generator`` seeded by ``seed + epoch`` (identical
on every rank), then bucketed by group id (e.g. 0: width >= height, 1: portrait); a bucket that
reaches ``batch_size`` becomes a batch, so every batch holds one group. Leftover partial buckets
become final smaller batches (or are dropped with ``drop_last``). This gives the epoch's GLOBAL
batch list; rank ``r`` of ``W`` takes global batches ``r, r + W, r + 2W, ...``. When the count is
not a multiple of ``W`` the list is padded by repeating its first batches, because DDP ranks must
run the same number of steps; with ``W = 1`` (or a count divisible by ``W``) every index is seen
exactly once per epoch.

Lightning: the sampler is built by ``DetectionDataModule`` and does its own sharding, so the
Trainer MUST be created with ``use_distributed_sampler=False`` (otherwise Lightning would try to
replace it). Lightning calls ``set_epoch(epoch)`` on the batch sampler at each epoch start.

Resume protocol (global batches, so it survives a change of world size):

* the training loop reports each consumed local batch with ``advance()`` (the DataModule does it
  in ``on_before_batch_transfer`` while training; counting in ``__iter__`` would over-count,
  because the DataLoader prefetches indices);
* ``state_dict()`` -> ``{"epoch": e, "consumed": n}`` with ``n`` global batches consumed so far
  in epoch ``e`` (``W`` per local step);
* ``load_state_dict(state)`` arms a skip: the next iteration of epoch ``e`` starts at global batch
  ``n``, and any other epoch starts at 0. ``len()`` stays the full epoch length (Lightning counts
  the skipped steps itself). The DataModule stores this state in its own ``state_dict`` and the
  train DataLoader exposes it too, so Lightning saves it in checkpoints and knows the loader is
  resumable.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size`` indices that share a group id, sharded over ranks.

    Args:
        group_ids: group of each dataset index (e.g. ``CocoInstanceDataset.aspect_groups()``).
        batch_size: images per batch on each rank.
        num_replicas, rank: world size and this rank (default 1 and 0).
        seed: shuffling seed; the order depends only on (seed, epoch).
        shuffle: shuffle indices each epoch (False keeps dataset order, still grouped).
        drop_last: drop partial batches instead of emitting them at the end of the epoch.
        with_seeds: yield ``(index, augmentation_seed)`` pairs instead of bare indices. The seed
            depends only on (seed, epoch, index), so a sample's random augmentation is the same
            whichever worker loads it and whether or not the run was resumed
            (``CocoInstanceDataset`` accepts such pairs).
        accumulate: batches per optimizer step (gradient accumulation). The epoch's batch list
            is padded to a multiple of ``num_replicas * accumulate`` (repeating its first
            batches, as for DDP), so every optimizer step of every rank accumulates exactly
            ``accumulate`` full batches and ``len(self) / accumulate`` steps make an epoch.
    """

    def __init__(
        self,
        group_ids: Sequence[int],
        batch_size: int,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        with_seeds: bool = False,
        accumulate: int = 1,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} must be in [0, num_replicas={num_replicas})")
        self.group_ids = [int(g) for g in group_ids]
        self.batch_size = int(batch_size)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.with_seeds = with_seeds
        if accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {accumulate}")
        self.accumulate = int(accumulate)
        self.epoch = 0
        self._start = 0  # global batches skipped at the start of the current epoch
        self._consumed = 0  # global batches consumed in the current epoch
        self._pending: tuple[int, int] | None = None  # (epoch, consumed) from load_state_dict

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of an epoch before sharding; identical on every rank."""
        epoch = self.epoch if epoch is None else epoch
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(len(self.group_ids), generator=g).tolist()
        else:
            order = list(range(len(self.group_ids)))
        buckets: dict[int, list[int]] = {}
        batches = []
        for idx in order:
            bucket = buckets.setdefault(self.group_ids[idx], [])
            bucket.append(idx)
            if len(bucket) == self.batch_size:
                batches.append(bucket)
                buckets[self.group_ids[idx]] = []
        if not self.drop_last:
            batches.extend(b for _, b in sorted(buckets.items()) if b)
        return batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        pending = self._pending
        self._start = pending[1] if pending is not None and pending[0] == self.epoch else 0
        self._consumed = self._start

    def _epoch_batches(self) -> list[list[int]]:
        """The epoch's global batches; with ``accumulate > 1`` padded to a multiple of
        ``num_replicas * accumulate``."""
        batches = self.global_batches()
        unit = self.num_replicas * self.accumulate
        if self.accumulate > 1 and batches and len(batches) % unit:
            batches = batches + [
                batches[i % len(batches)] for i in range(unit - len(batches) % unit)
            ]
        return batches

    def _local_batches(self) -> list[list[int]]:
        batches = self._epoch_batches()
        remaining = batches[self._start :]
        if remaining and len(remaining) % self.num_replicas:
            pad = self.num_replicas - len(remaining) % self.num_replicas
            remaining = remaining + [batches[i % len(batches)] for i in range(pad)]
        return remaining[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        self.set_epoch(self.epoch)  # re-arms the resume skip when iterated without set_epoch
        self._pending = None
        if not self.with_seeds:
            yield from self._local_batches()
            return
        for batch in self._local_batches():
            yield [(i, self.sample_seed(i)) for i in batch]

    def sample_seed(self, index: int) -> int:
        """Augmentation seed of dataset ``index`` in the current epoch: a function of
        (seed, epoch, index) only."""
        return int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])

    def __len__(self) -> int:
        """Local batches in the whole epoch, counting the ones skipped on resume.

        Lightning restores its own step counter within the epoch and compares it with this length,
        so a resumed epoch must report its full length while yielding only the remaining batches.
        """
        if self._pending is not None and self._pending[0] == self.epoch:
            start = self._pending[1]
        else:
            start = self._start
        total = len(self._epoch_batches())
        start = min(start, total)
        remaining = total - start
        return -(-start // self.num_replicas) + -(-remaining // self.num_replicas)

    def advance(self, local_batches: int = 1) -> None:
        """Record that the training loop consumed ``local_batches`` batches on this rank."""
        self._consumed += local_batches * self.num_replicas

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self._consumed, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(
                f"sampler state was saved with seed {state['seed']}, this run uses {self.seed}"
            )
        self._pending = (int(state["epoch"]), int(state["consumed"]))
        self.set_epoch(self.epoch)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + W, rank + 2W, ...`` of a dataset of ``length``: each evaluation
    image goes to exactly one rank, without padding (a padded sampler would evaluate some images
    twice). Ranks may get one image more or less; evaluation runs no collectives per batch, and
    the predictions are gathered by image id afterwards."""

    def __init__(self, length: int, *, num_replicas: int = 1, rank: int = 0):
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} must be in [0, num_replicas={num_replicas})")
        self.length, self.num_replicas, self.rank = int(length), int(num_replicas), int(rank)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.num_replicas))
