"""The norm vocabulary against independent references (torch's own layers, hand formulas)."""

import copy
import functools
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detnorm.layers import norm as N


def _randomize_affine(module: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return module


@pytest.fixture
def x():
    return torch.randn(2, 64, 5, 7, generator=torch.Generator().manual_seed(1)) * 3 + 1


def test_unknown_name_lists_valid_names():
    with pytest.raises(
        ValueError, match="valid names are none, bn, frozen_bn, sync_bn, gn, ln, in, gn_ws"
    ):
        N.norm_layer("batchnorm")


def test_none_is_none():
    assert N.norm_layer("none") is None


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_bad_group_count(bad):
    with pytest.raises(ValueError, match="groups must be a positive integer"):
        N.norm_layer("gn", groups=bad)


def test_indivisible_channels_name_both_numbers():
    layer = N.norm_layer("gn", groups=32)
    with pytest.raises(ValueError, match="48 channels are not divisible by 32 groups"):
        layer(48)
    with pytest.raises(ValueError, match="40 channels are not divisible by 16 channels per group"):
        N.norm_layer("gn", channels_per_group=16)(40)


def test_gn_matches_hand_formula_and_torch(x):
    gn = _randomize_affine(N.norm_layer("gn", groups=32)(64))
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 32 and gn.eps == 1e-5
    # hand formula: statistics over (C/G, H, W) per sample and group, biased variance
    xg = x.view(2, 32, -1)
    ref = (xg - xg.mean(-1, keepdim=True)) / torch.sqrt(
        xg.var(-1, unbiased=False, keepdim=True) + 1e-5
    )
    ref = ref.view_as(x) * gn.weight.view(1, -1, 1, 1) + gn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(gn(x), ref, atol=1e-5, rtol=1e-5)
    torch_gn = nn.GroupNorm(32, 64)
    torch_gn.load_state_dict(gn.state_dict())
    torch.testing.assert_close(gn(x), torch_gn(x))


def test_channels_per_group(x):
    gn = N.norm_layer("gn", groups=32, channels_per_group=16)(64)
    assert gn.num_groups == 4


def test_ln_is_layer_norm_over_chw(x):
    ln = _randomize_affine(N.norm_layer("ln")(64))
    ref = F.layer_norm(x, x.shape[1:], eps=1e-5)
    ref = ref * ln.weight.view(1, -1, 1, 1) + ln.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(ln(x), ref, atol=1e-5, rtol=1e-5)


def test_in_is_affine_instance_norm(x):
    inorm = _randomize_affine(N.norm_layer("in")(64))
    ref = nn.InstanceNorm2d(64, affine=True, eps=1e-5)
    ref.load_state_dict(inorm.state_dict())
    torch.testing.assert_close(inorm(x), ref(x), atol=1e-5, rtol=1e-5)


def test_frozen_bn_equals_bn_eval_and_has_no_parameters(x):
    bn = _randomize_affine(nn.BatchNorm2d(64))
    bn.train()
    for _ in range(3):  # give it real running statistics
        bn(x * 2 + 0.5)
    bn.eval()
    frozen = N.convert_frozen_bn(copy.deepcopy(bn))
    assert isinstance(frozen, N.FrozenBatchNorm2d)
    assert list(frozen.parameters()) == []
    torch.testing.assert_close(frozen(x), bn(x), atol=1e-5, rtol=1e-5)
    fresh = N.norm_layer("frozen_bn")(64)
    assert isinstance(fresh, N.FrozenBatchNorm2d) and list(fresh.parameters()) == []


def test_sync_bn_without_process_group_is_bn(x):
    sbn = N.norm_layer("sync_bn")(64)
    assert isinstance(sbn, N.SyncBatchNorm)
    bn = nn.BatchNorm2d(64)
    bn.load_state_dict(sbn.state_dict())
    torch.testing.assert_close(sbn(x), bn(x))
    torch.testing.assert_close(sbn.running_var, bn.running_var)


def test_ws_conv_standardizes_each_filter():
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    ws = N.convert_ws_conv(copy.deepcopy(conv))
    assert isinstance(ws, N.WSConv2d)
    w = conv.weight
    w_ref = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / torch.sqrt(
        w.var(dim=(1, 2, 3), unbiased=False, keepdim=True) + 1e-5
    )
    inp = torch.randn(1, 8, 6, 6)
    torch.testing.assert_close(ws(inp), F.conv2d(inp, w_ref, padding=1), atol=1e-5, rtol=1e-5)
    assert set(ws.state_dict()) == set(conv.state_dict())


def _block(name: str) -> nn.Sequential:
    layer = N.norm_layer(name, groups=8)
    mods = [nn.Conv2d(3, 16, 3, bias=layer is None)]
    if layer is not None:
        mods.append(layer(16))
    mods += [nn.ReLU(), nn.Conv2d(16, 4, 1)]
    return N.finalize_component(nn.Sequential(*mods), name)


@pytest.mark.parametrize("name", N.NORM_NAMES)
def test_finalize_component_only_changes_gn_ws(name):
    block = _block(name)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    expect_ws = name == "gn_ws"
    assert all(isinstance(c, N.WSConv2d) == expect_ws for c in convs)


@pytest.mark.parametrize("name", N.NORM_NAMES)
def test_models_with_every_norm_pickle(name):
    block = _block(name)
    clone = pickle.loads(pickle.dumps(block))
    inp = torch.randn(2, 3, 8, 8)
    block.eval()
    clone.eval()
    torch.testing.assert_close(block(inp), clone(inp))
    layer = N.norm_layer(name)
    assert layer is None or isinstance(layer, (type, functools.partial))


def test_convert_sync_bn_only_touches_plain_bn():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.GroupNorm(2, 8), N.FrozenBatchNorm2d(8)
    )
    _randomize_affine(model[1])
    model[1].running_mean.fill_(0.3)
    N.convert_sync_bn(model)
    assert isinstance(model[1], N.SyncBatchNorm)
    assert isinstance(model[2], nn.GroupNorm) and isinstance(model[3], N.FrozenBatchNorm2d)
    assert torch.all(model[1].running_mean == 0.3)
    # and back: sync_bn freezes like bn
    N.convert_frozen_bn(model)
    assert isinstance(model[1], N.FrozenBatchNorm2d)
    assert torch.all(model[1].running_mean == 0.3)


def test_param_groups_cover_every_parameter_once():
    shared = nn.Conv2d(4, 4, 1)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.GroupNorm(2, 4),
        shared,
        shared,  # shared module: its parameters count once
        nn.BatchNorm2d(4),
        N.FrozenBatchNorm2d(4),
        nn.Linear(4, 2),
    )
    model[0].bias.requires_grad_(False)  # frozen: left out
    groups = N.param_groups(model, weight_decay=1e-4)
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


def test_batchnorm_modules_and_batch_stat_names():
    model = nn.Sequential(
        nn.BatchNorm2d(4), N.SyncBatchNorm(4), N.FrozenBatchNorm2d(4), nn.GroupNorm(1, 4)
    )
    assert N.batchnorm_modules(model) == [model[0], model[1]]
    assert [n for n in N.NORM_NAMES if N.uses_batch_stats(n)] == ["bn", "sync_bn"]


def test_describe_norm():
    assert N.describe_norm("gn", groups=16) == "gn (16 groups)"
    assert N.describe_norm("gn_ws", channels_per_group=16) == "gn_ws (16 ch/group)"
    assert N.describe_norm("frozen_bn") == "frozen_bn"
    with pytest.raises(ValueError, match="backbone_norm: unknown norm"):
        N.validate_norm("gm", "backbone_norm")
