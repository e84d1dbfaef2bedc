"""Grouped batch sampler: group purity, coverage, rank partition, determinism, resume."""

import pytest

from detnorm.data.sampler import GroupedBatchSampler

GROUPS = [i % 3 == 0 for i in range(50)]  # 17 portrait-like, 33 landscape-like


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def test_batches_share_a_group_and_cover_every_index_once():
    s = GroupedBatchSampler(GROUPS, 4, seed=3)
    for epoch in range(3):
        batches = _epoch(s, epoch)
        assert len(batches) == len(s)
        assert all(len({GROUPS[i] for i in b}) == 1 for b in batches)
        assert all(1 <= len(b) <= 4 for b in batches)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(50))
    assert _epoch(s, 0) != _epoch(s, 1)  # reshuffled per epoch
    assert _epoch(s, 1) == _epoch(GroupedBatchSampler(GROUPS, 4, seed=3), 1)  # (seed, epoch)


def test_drop_last_keeps_only_full_batches():
    batches = _epoch(GroupedBatchSampler(GROUPS, 4, drop_last=True), 0)
    assert all(len(b) == 4 for b in batches) and len(batches) == 33 // 4 + 17 // 4


def test_two_ranks_partition_the_epoch():
    groups = [i % 2 for i in range(48)]  # 12 batches of 4: divisible by 2 ranks
    ranks = [GroupedBatchSampler(groups, 4, num_replicas=2, rank=r, seed=1) for r in (0, 1)]
    per_rank = [_epoch(s, 5) for s in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == 6
    seen = [i for batches in per_rank for b in batches for i in b]
    assert sorted(seen) == list(range(48))  # disjoint and complete


def test_uneven_ranks_pad_with_repeated_batches():
    ranks = [GroupedBatchSampler(GROUPS, 4, num_replicas=3, rank=r, seed=1) for r in range(3)]
    per_rank = [_epoch(s, 0) for s in ranks]
    assert len({len(b) for b in per_rank}) == 1  # same number of steps on every rank
    seen = [i for batches in per_rank for b in batches for i in b]
    assert set(seen) == set(range(50))
    total = len(ranks[0].global_batches(0))
    assert len(per_rank[0]) * 3 - total < 3  # at most world - 1 padded batches


@pytest.mark.parametrize("world", [1, 2])
def test_resume_continues_exactly(world):
    groups = [i % 2 for i in range(40)]
    full = [_epoch(GroupedBatchSampler(groups, 2, num_replicas=world, rank=0, seed=9), 2)]
    first = GroupedBatchSampler(groups, 2, num_replicas=world, rank=0, seed=9)
    first.set_epoch(2)
    it = iter(first)
    consumed = [next(it) for _ in range(3)]
    first.advance(3)
    state = first.state_dict()
    assert state == {"epoch": 2, "consumed": 3 * world, "seed": 9}

    resumed = GroupedBatchSampler(groups, 2, num_replicas=world, rank=0, seed=9)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # what Lightning does at the start of the resumed epoch
    assert len(resumed) == len(full[0])  # Lightning counts the skipped steps itself
    rest = list(resumed)
    assert consumed + rest == full[0]
    resumed.set_epoch(3)  # the following epoch starts from its beginning
    assert list(resumed) == _epoch(GroupedBatchSampler(groups, 2, num_replicas=world, seed=9), 3)


def test_resume_after_world_size_change_covers_the_rest():
    groups = [i % 2 for i in range(40)]
    one = GroupedBatchSampler(groups, 2, seed=4)
    one.set_epoch(0)
    done = list(iter(one))[:4]
    one.advance(4)
    rest = []
    for r in (0, 1):
        s = GroupedBatchSampler(groups, 2, num_replicas=2, rank=r, seed=4)
        s.load_state_dict(one.state_dict())
        s.set_epoch(0)
        rest += list(s)
    assert sorted(i for b in done + rest for i in b) == list(range(40))


def test_state_with_other_seed_is_refused():
    s = GroupedBatchSampler(GROUPS, 2, seed=1)
    with pytest.raises(ValueError, match="seed 2"):
        s.load_state_dict({"epoch": 0, "consumed": 2, "seed": 2})


def test_augmentation_seeds_depend_on_seed_epoch_and_index_only():
    seeded = GroupedBatchSampler(GROUPS, 4, seed=3, with_seeds=True)
    plain = GroupedBatchSampler(GROUPS, 4, seed=3)
    batches = _epoch(seeded, 2)
    assert [[i for i, _ in b] for b in batches] == _epoch(plain, 2)  # same order as without
    seeds = {i: s for b in batches for i, s in b}
    assert len(set(seeds.values())) == len(seeds)  # a different stream per sample
    again = {i: s for b in _epoch(GroupedBatchSampler(GROUPS, 4, seed=3, with_seeds=True), 2)
             for i, s in b}  # fmt: skip
    assert again == seeds
    other_epoch = {i: s for b in _epoch(seeded, 3) for i, s in b}
    assert all(other_epoch[i] != seeds[i] for i in seeds)
    # a resumed sampler hands the remaining samples the same seeds
    resumed = GroupedBatchSampler(GROUPS, 4, seed=3, with_seeds=True)
    resumed.load_state_dict({"epoch": 2, "consumed": 5, "seed": 3})
    assert _epoch(resumed, 2) == batches[5:]


@pytest.mark.parametrize("length, world", [(10, 3), (2, 4), (0, 2), (7, 1)])
def test_shard_sampler_gives_each_index_to_exactly_one_rank(length, world):
    from detnorm.data.sampler import ShardSampler

    shards = [list(ShardSampler(length, num_replicas=world, rank=r)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(length))
    assert [len(ShardSampler(length, num_replicas=world, rank=r)) for r in range(world)] == [
        len(s) for s in shards
    ]
    with pytest.raises(ValueError, match="rank 3 must be in"):
        ShardSampler(length, num_replicas=3, rank=3)
