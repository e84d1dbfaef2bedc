"""PreciseBN against a hand computation on a tiny conv + BN model; the callback with the loader
it is handed; the datamodule's statistics loader against the rebuild it replaces."""

import contextlib
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from helpers.runs import assert_same_state, tiny_args
from torch import nn
from torch.utils.data import DataLoader

from detnorm.engine.precise_bn import PreciseBN
from detnorm.layers.batch_stats import update_bn_stats
from detnorm.layers.norm import FrozenBatchNorm2d

EPS = 1e-5


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False),
        nn.BatchNorm2d(4, eps=EPS, momentum=0.1),
        nn.ReLU(),
        nn.Conv2d(4, 5, 3, bias=False),
        nn.BatchNorm2d(5, eps=EPS, momentum=0.1),
        FrozenBatchNorm2d(5),  # buffers only: PreciseBN must leave it alone
    )
    with torch.no_grad():  # non-trivial affine parameters for the first BN
        m[1].weight.copy_(torch.tensor([0.5, 1.5, 2.0, -1.0]))
        m[1].bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
    return m.eval()


def _hand_stats(m: nn.Sequential, batches):
    """Per-batch mean and unbiased variance of each BN input, averaged over batches."""
    w1, w2 = m[0].weight, m[3].weight
    g, b = m[1].weight, m[1].bias
    sums = {k: 0 for k in ("m1", "v1", "m2", "v2")}
    for x in batches:
        x1 = F.conv2d(x, w1)
        c = x1.transpose(0, 1).reshape(4, -1)
        mean1, var1_b, var1_u = c.mean(1), c.var(1, unbiased=False), c.var(1, unbiased=True)
        # training-mode BN normalizes with the biased batch variance
        y1 = (x1 - mean1.view(1, -1, 1, 1)) / torch.sqrt(var1_b.view(1, -1, 1, 1) + EPS)
        y1 = torch.relu(y1 * g.view(1, -1, 1, 1) + b.view(1, -1, 1, 1))
        c2 = F.conv2d(y1, w2).transpose(0, 1).reshape(5, -1)
        sums["m1"] += mean1
        sums["v1"] += var1_u
        sums["m2"] += c2.mean(1)
        sums["v2"] += c2.var(1, unbiased=True)
    n = len(batches)
    return {k: v / n for k, v in sums.items()}


def test_matches_hand_computation():
    m = _model()
    gen = torch.Generator().manual_seed(1)
    # batches of different sizes and shifted distributions, so averaging order matters
    batches = [
        torch.randn(n, 3, 9, 9, generator=gen) * (1 + i) + i for i, n in enumerate((2, 3, 1))
    ]
    batches.append(torch.randn(4, 3, 9, 9, generator=gen) * 100)  # beyond num_iters: unused
    with torch.no_grad():
        expected = _hand_stats(m, batches[:3])
    frozen_before = m[5].running_mean.clone()
    used = update_bn_stats(m, iter(batches), num_iters=3)
    assert used == 3
    torch.testing.assert_close(m[1].running_mean, expected["m1"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m[1].running_var, expected["v1"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m[4].running_mean, expected["m2"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m[4].running_var, expected["v2"], rtol=1e-5, atol=1e-6)
    # momenta and train/eval modes are restored; frozen BN untouched
    assert m[1].momentum == 0.1 and m[4].momentum == 0.1
    assert not any(x.training for x in m.modules())
    assert torch.equal(m[5].running_mean, frozen_before)


def test_independent_of_previous_running_stats():
    m1, m2 = _model(), _model()
    with torch.no_grad():
        m2[1].running_mean.fill_(7.0)
        m2[4].running_var.fill_(3.0)
    batches = [torch.randn(2, 3, 8, 8) for _ in range(2)]
    update_bn_stats(m1, batches, 2)
    update_bn_stats(m2, batches, 2)
    for a, b in zip(m1.buffers(), m2.buffers(), strict=True):
        torch.testing.assert_close(a, b)


def test_too_few_batches_uses_what_there_is(caplog):
    m = _model()
    batches = [torch.randn(2, 3, 8, 8)]
    with torch.no_grad():
        expected = _hand_stats(m, batches)
    assert update_bn_stats(m, batches, num_iters=5) == 1
    torch.testing.assert_close(m[1].running_mean, expected["m1"], rtol=1e-5, atol=1e-6)
    assert "only 1 of 5" in caplog.text


def test_no_bn_is_a_no_op():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4)).eval()
    calls = []
    assert update_bn_stats(m, [torch.randn(1, 3, 5, 5)], 1, lambda mod, b: calls.append(b)) == 0
    assert calls == []


def test_restores_state_when_forward_fails():
    m = _model()
    before = [t.clone() for t in m.buffers()]

    def boom(mod, batch):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        update_bn_stats(m, [torch.randn(1, 3, 5, 5)], 1, boom)
    assert m[1].momentum == 0.1 and not m.training
    for a, b in zip(before, m.buffers(), strict=True):
        assert torch.equal(a, b)


def test_callback_in_training_changes_only_bn_statistics(tiny_data, tmp_path):
    """--norm bn with an evaluation after step 1: PreciseBN recomputes the statistics there, and
    the training that follows is the same as with --no-precise-bn (RNG untouched)."""
    from detnorm.cli.train import main

    states = {}
    for name, extra in (("on", []), ("off", ["--no-precise-bn"])):
        out = tmp_path / name
        argv = [
            *tiny_args(tiny_data),
            "--norm",
            "bn",
            "--eval-period",
            "1",
            "--output-dir",
            str(out),
        ]
        assert main([*argv, *extra]) == 0
        states[name] = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)[
            "state_dict"
        ]
    on, off = states["on"], states["off"]
    running = [k for k in on if k.endswith(("running_mean", "running_var"))]
    assert running
    start = torch.load(tmp_path / "off" / "checkpoints" / "step=000001.ckpt",
                       weights_only=False)["state_dict"]  # fmt: skip
    learned = [k for k in on if k not in running and not k.endswith("num_batches_tracked")]
    assert_same_state(*({k: s[k] for k in learned} for s in (on, off, start)))
    assert sum(not torch.equal(on[k], off[k]) for k in running) >= len(running) // 2


class _Detector(nn.Module):
    """Takes ``(images, targets)`` as a detector does; only the images reach the BN model."""

    def __init__(self):
        super().__init__()
        self.net = _model()

    def forward(self, images, targets):
        return self.net(torch.stack(images))


def _fake_run(model, step: int):
    trainer = SimpleNamespace(
        sanity_checking=False,
        state=SimpleNamespace(fn="fit"),
        precision_plugin=SimpleNamespace(forward_context=contextlib.nullcontext),
        world_size=1,
        global_step=step,
        datamodule=None,
    )
    pl_module = SimpleNamespace(
        model=model, device=torch.device("cpu"), transfer_batch_to_device=lambda b, d, i: b
    )
    return trainer, pl_module


def test_callback_runs_over_the_loader_it_is_handed():
    gen = torch.Generator().manual_seed(5)
    batches = [
        ([torch.randn(3, 9, 9, generator=gen) for _ in range(2)], [{}, {}]) for _ in range(3)
    ]
    calls = []

    def loader():
        calls.append(1)
        return iter(batches)

    detector = _Detector()
    reference = _model()
    update_bn_stats(reference, [torch.stack(images) for images, _ in batches], 2)
    callback = PreciseBN(2, loader)
    trainer, pl_module = _fake_run(detector, step=7)
    torch.manual_seed(11)
    callback.on_validation_start(trainer, pl_module)
    after = torch.rand(3)
    torch.manual_seed(11)
    assert torch.equal(after, torch.rand(3))  # the global RNG is as before
    assert calls == [1] and callback.last_step == 7
    for a, b in zip(detector.net.buffers(), reference.buffers(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(RuntimeError, match="needs a data_loader"):
        PreciseBN(2).on_validation_start(*_fake_run(_Detector(), step=0))


def _old_rebuild(dm, trainer, epoch):
    """The loader PreciseBN used to build from the datamodule's fields, for comparison."""
    from detnorm.data.datamodule import collate_detection
    from detnorm.data.sampler import GroupedBatchSampler

    sampler = GroupedBatchSampler(
        dm.train_set.aspect_groups(),
        dm.batch_size,
        num_replicas=trainer.world_size,
        rank=trainer.global_rank,
        seed=dm.seed + 7919 * (trainer.global_step + 1),
        with_seeds=True,
    )
    sampler.set_epoch(epoch)
    return DataLoader(
        dm.train_set,
        batch_sampler=sampler,
        num_workers=dm.num_workers,
        collate_fn=collate_detection,
    )


def _assert_same_batch(a, b):
    (images_a, targets_a), (images_b, targets_b) = a, b
    assert len(images_a) == len(images_b) and len(targets_a) == len(targets_b)
    for x, y in zip(images_a, images_b, strict=True):
        assert torch.equal(x, y)
    for ta, tb in zip(targets_a, targets_b, strict=True):
        assert ta.keys() == tb.keys()
        for key in ta:
            va, vb = ta[key], tb[key]
            assert torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb, key


def test_datamodule_precise_bn_loader_matches_the_old_rebuild(tiny_data):
    from detnorm.data.datamodule import DetectionDataModule

    dm = DetectionDataModule(tiny_data, batch_size=2, train_scales=(64,), max_size=96, seed=3)
    dm.setup("fit")
    trainer = SimpleNamespace(world_size=1, global_rank=0, global_step=5)
    dm.trainer = trainer
    per_epoch = len(_old_rebuild(dm, trainer, 0))
    assert per_epoch >= 1
    n = 2 * per_epoch + 1  # runs into a third epoch
    old = [b for epoch in range(3) for b in _old_rebuild(dm, trainer, epoch)][:n]
    new = dm.precise_bn_loader()
    got = [next(new) for _ in range(n)]
    for a, b in zip(old, got, strict=True):
        _assert_same_batch(a, b)
    # another step, other batches; the training sampler is untouched
    trainer.global_step = 6
    first = next(dm.precise_bn_loader())
    assert not all(torch.equal(x, y) for x, y in zip(first[0], got[0][0], strict=True))
    assert dm.batch_sampler is None
