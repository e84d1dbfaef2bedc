"""``optimizer: sgd|adamw`` and ``lr_schedule: step|cosine``: the parameter groups (weight decay 0
on norm parameters in both) and the LR curves (warmup in both), against torch's own schedulers
and hand-computed values."""

import math

import pytest
import torch
from helpers.hparams import HP
from torchvision.ops.misc import FrozenBatchNorm2d

from detnorm.config import ConfigError, build_config
from detnorm.engine.module import DetnormModule
from detnorm.layers.norm import is_norm_module
from detnorm.solver.optimizer import build_optimizer
from detnorm.solver.param_groups import param_groups
from detnorm.solver.schedule import build_lr_scheduler, resolve_schedule


def _lrs(spec, steps):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=spec.lr)
    sched = build_lr_scheduler(opt, spec)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_without_warmup_is_torchs_cosine_annealing():
    spec = resolve_schedule("1x", 16, max_steps=200, warmup_iters=0, lr_schedule="cosine")
    assert (spec.kind, spec.milestones, spec.warmup_iters) == ("cosine", (), 0)
    p = torch.nn.Parameter(torch.zeros(1))
    ref_opt = torch.optim.SGD([p], lr=spec.lr)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=200, eta_min=0.0)
    expected = []
    for _ in range(200):
        expected.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    assert _lrs(spec, 200) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_cosine_with_warmup_multiplies_the_same_warmup():
    spec = resolve_schedule("1x", 16, max_steps=9000, lr_schedule="cosine")  # warmup 100
    assert spec.warmup_iters == resolve_schedule("1x", 16, max_steps=9000).warmup_iters == 100
    lrs = _lrs(spec, 9000)
    for it in (0, 1, 50, 99, 100, 4500, 8999):
        warm = 0.001 * (1 - it / 100) + it / 100 if it < 100 else 1.0
        cosine = 0.5 * (1 + math.cos(math.pi * it / 9000))
        assert lrs[it] == pytest.approx(0.02 * warm * cosine, rel=1e-9), it
    assert lrs[4500] == pytest.approx(0.01)  # half way: half the peak
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:], strict=False))  # decreasing


def test_step_stays_the_default():
    spec = resolve_schedule("1x", 16, max_steps=90)
    assert (spec.kind, spec.milestones) == ("step", (60, 80))
    lrs = _lrs(resolve_schedule("1x", 16, max_steps=9000, lr_schedule="step"), 9000)
    assert lrs[5999] == pytest.approx(0.02) and lrs[6000] == pytest.approx(0.002)
    with pytest.raises(ValueError, match="allowed: step, cosine"):
        resolve_schedule("1x", 16, lr_schedule="poly")


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
@pytest.mark.parametrize("lr_schedule", ["step", "cosine"])
def test_param_groups_and_first_lr(name, cls, lr_schedule):
    module = DetnormModule(**{**HP, "optimizer": name, "lr_schedule": lr_schedule})
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert type(opt) is cls
    norm_ids = {id(p) for m in module.model.modules() if is_norm_module(m)
                for p in m.parameters(recurse=False)}  # fmt: skip
    seen = {}
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.02 * 4 / 16 * 0.001)  # warmup starts at 0.001 x LR
        seen.update({id(p): g["weight_decay"] for p in g["params"]})
    trainable = [p for p in module.model.parameters() if p.requires_grad]
    assert len(seen) == len(trainable) and any(id(p) in norm_ids for p in trainable)
    for p in trainable:
        assert seen[id(p)] == (0.0 if id(p) in norm_ids else 1e-4)
    assert {g["name"] for g in opt.param_groups} == {"default", "norm"}
    if name == "sgd":
        assert opt.defaults["momentum"] == 0.9
    spec = module.schedule
    assert spec.kind == lr_schedule
    it = spec.max_steps // 2  # past warmup: step decay (none yet) or half of the cosine
    factor = sched.lr_lambdas[0](it)
    assert factor == pytest.approx(1.0 if lr_schedule == "step" else 0.5, abs=1e-4)


def test_adamw_leaves_norm_parameters_undecayed():
    """AdamW's decoupled decay shrinks a parameter with zero gradient by lr * wd per step: it
    must touch the default group and leave the norm group exactly as it was."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(2, 4))
    torch.nn.init.constant_(model[1].weight, 2.0)
    opt = build_optimizer(model, "adamw", lr=0.1, weight_decay=0.5, norm_weight_decay=0.0)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    conv_w, gn_w = model[0].weight, model[1].weight
    assert torch.allclose(conv_w, before[0] * (1 - 0.1 * 0.5))
    assert torch.equal(gn_w, before[2])


@pytest.mark.parametrize(
    "flags, key",
    [({"optimizer": "adam"}, "optimizer"), ({"lr_schedule": "poly"}, "lr_schedule")],
)
def test_bad_names_are_refused(flags, key):
    with pytest.raises(ConfigError) as err:
        build_config(overrides=flags)
    assert err.value.key == key and repr(flags[key]) in err.value.message


def test_param_groups_cover_every_parameter_once():
    nn = torch.nn
    shared = nn.Conv2d(4, 4, 1)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.GroupNorm(2, 4),
        shared,
        shared,  # shared module: its parameters count once
        nn.BatchNorm2d(4),
        FrozenBatchNorm2d(4),
        nn.Linear(4, 2),
    )
    model[0].bias.requires_grad_(False)  # frozen: left out
    groups = param_groups(model, weight_decay=1e-4)
    by_name = {g["name"]: g for g in groups}
    assert by_name["default"]["weight_decay"] == 1e-4
    assert by_name["norm"]["weight_decay"] == 0.0
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(ids) == trainable
    norm_ids = {id(p) for m in (model[1], model[4]) for p in m.parameters()}
    assert {id(p) for p in by_name["norm"]["params"]} == norm_ids
    # the optimizer accepts the groups as they are
    torch.optim.SGD(groups, lr=0.1, momentum=0.9)


def test_unknown_optimizer_name_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        build_optimizer(torch.nn.Linear(2, 2), "adam", lr=0.1)
    assert (
        err.value.key == "optimizer" and err.value.message == "unknown 'adam'; allowed: sgd, adamw"
    )


def test_adamw_at_an_sgd_learning_rate_warns():
    from detnorm.engine.trainer_options import optimizer_warning

    assert "AdamW usually wants about 1e-4" in optimizer_warning(
        {"optimizer": "adamw", "base_lr": 0.02}
    )
    assert optimizer_warning({"optimizer": "adamw", "base_lr": 1e-4}) is None
    assert optimizer_warning({"optimizer": "sgd", "base_lr": 0.02}) is None
