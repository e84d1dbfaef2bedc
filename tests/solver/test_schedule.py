"""Schedule scaling and the warmup + step LR curve, against hand-computed values."""

import pytest
import torch

from detnorm.errors import ConfigError
from detnorm.solver.schedule import build_lr_scheduler, resolve_schedule


@pytest.mark.parametrize(
    "name, batch, lr, total, steps, warmup",
    [
        ("1x", 16, 0.02, 90_000, (60_000, 80_000), 1000),
        ("2x", 16, 0.02, 180_000, (120_000, 160_000), 1000),
        ("3x", 16, 0.02, 270_000, (210_000, 250_000), 1000),
        ("1x", 8, 0.01, 180_000, (120_000, 160_000), 2000),
        ("3x", 2, 0.0025, 2_160_000, (1_680_000, 2_000_000), 8000),
        ("2x", 32, 0.04, 90_000, (60_000, 80_000), 500),
    ],
)
def test_linear_scaling(name, batch, lr, total, steps, warmup):
    spec = resolve_schedule(name, batch)
    assert spec.lr == pytest.approx(lr)
    assert spec.max_steps == total
    assert spec.milestones == steps
    assert spec.warmup_iters == warmup
    assert spec.warmup_factor == 0.001


def test_max_steps_keeps_fractions():
    spec = resolve_schedule("1x", 16, max_steps=300)
    assert spec.max_steps == 300
    assert spec.milestones == (200, 267)  # 2/3 and 8/9 of 300
    assert spec.warmup_iters == 3  # 1000/90000 of 300
    assert spec.lr == pytest.approx(0.02)  # LR is not touched by max_steps
    spec = resolve_schedule("3x", 4, max_steps=540)  # scaled: 1_080_000 total, 4000 warmup
    assert spec.milestones == (420, 500)
    assert spec.warmup_iters == 2
    assert spec.lr == pytest.approx(0.005)


@pytest.mark.parametrize(
    "kwargs, key, match",
    [
        (dict(schedule="4x", total_batch_size=16), "schedule", "allowed: 1x, 2x, 3x"),
        (dict(schedule="1x", total_batch_size=16, lr_schedule="poly"), "lr_schedule", "poly"),
        (dict(schedule="1x", total_batch_size=0), "total_batch_size", "integer >= 1, got 0"),
        (dict(schedule="1x", total_batch_size=16, max_steps=0), "max_steps", "got 0"),
        (dict(schedule="1x", total_batch_size=16, base_lr=0.0), "base_lr", "positive number"),
        (dict(schedule="1x", total_batch_size=16, warmup_iters=-1), "warmup_iters", "got -1"),
        (dict(schedule="1x", total_batch_size=16, warmup_factor=0.0), "warmup_factor", "got 0.0"),
        (dict(schedule="1x", total_batch_size=16, warmup_factor=1.5), "warmup_factor", r"\(0, 1\]"),
    ],
)
def test_bad_values(kwargs, key, match):
    with pytest.raises(ConfigError, match=match) as err:
        resolve_schedule(**kwargs)
    assert err.value.key == key and not err.value.message.startswith(key)


def _lr_curve(spec, steps):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=spec.lr, momentum=0.9)
    sched = build_lr_scheduler(opt, spec)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs, opt, sched


def test_lr_curve_warmup_then_steps():
    spec = resolve_schedule("1x", 16, max_steps=90)  # milestones 60, 80; warmup 1
    assert (spec.milestones, spec.warmup_iters) == ((60, 80), 1)
    spec = resolve_schedule("1x", 16, max_steps=9000)  # milestones 6000, 8000; warmup 100
    lrs, _, _ = _lr_curve(spec, 9000)
    # detectron2 linear warmup: factor = 0.001 * (1 - it/W) + it/W
    assert lrs[0] == pytest.approx(0.02 * 0.001)
    assert lrs[50] == pytest.approx(0.02 * (0.001 * 0.5 + 0.5))
    assert lrs[99] == pytest.approx(0.02 * (0.001 * 0.01 + 0.99))
    assert lrs[100] == pytest.approx(0.02)
    assert lrs[5999] == pytest.approx(0.02)
    assert lrs[6000] == pytest.approx(0.002)
    assert lrs[7999] == pytest.approx(0.002)
    assert lrs[8000] == pytest.approx(0.0002)
    assert lrs[-1] == pytest.approx(0.0002)


def test_scheduler_state_round_trip():
    spec = resolve_schedule("2x", 16, max_steps=180)
    _, opt, sched = _lr_curve(spec, 125)
    state = sched.state_dict()
    p = torch.nn.Parameter(torch.zeros(1))
    opt2 = torch.optim.SGD([p], lr=spec.lr, momentum=0.9)
    sched2 = build_lr_scheduler(opt2, spec)
    sched2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    assert sched2.last_epoch == 125
    assert sched2.get_last_lr() == pytest.approx([0.002])
