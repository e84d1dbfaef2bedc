"""The norm vocabulary against independent references (torch's own layers, hand formulas)."""

import copy
import functools
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detnorm.errors import ConfigError
from detnorm.layers import norm as N
from detnorm.layers.ws_conv import WSConv2d, convert_ws_conv


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
    with pytest.raises(ConfigError) as err:
        N.norm_layer("batchnorm")
    assert err.value.key == "norm"
    assert err.value.message == (
        "unknown norm 'batchnorm'; valid names are none, bn, frozen_bn, sync_bn, gn, ln, in, gn_ws"
    )
    with pytest.raises(ConfigError) as err:
        N.build_with_norm("batchnorm", functools.partial(nn.Conv2d, 3, 4, 1))
    assert err.value.key == "norm"


def test_none_is_none():
    assert N.norm_layer("none") is None


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_bad_group_count(bad):
    with pytest.raises(ConfigError, match="must be an integer >= 1") as err:
        N.norm_layer("gn", groups=bad)
    assert err.value.key == "gn_groups"
    with pytest.raises(ValueError):  # a ConfigError is a ValueError
        N.norm_layer("gn", channels_per_group=bad)


def test_indivisible_channels_name_both_numbers():
    layer = N.norm_layer("gn", groups=32)
    with pytest.raises(ConfigError) as err:
        layer(48)
    assert err.value.key == "gn_groups"
    assert err.value.message == (
        "48 channels are not divisible by 32 groups; choose a group count that divides every "
        "channel width (e.g. 32, 16, 8, 1)"
    )
    assert str(err.value).startswith("gn_groups: 48 channels")
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
    ws = convert_ws_conv(copy.deepcopy(conv))
    assert isinstance(ws, WSConv2d)
    w = conv.weight
    w_ref = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / torch.sqrt(
        w.var(dim=(1, 2, 3), unbiased=False, keepdim=True) + 1e-5
    )
    inp = torch.randn(1, 8, 6, 6)
    torch.testing.assert_close(ws(inp), F.conv2d(inp, w_ref, padding=1), atol=1e-5, rtol=1e-5)
    assert set(ws.state_dict()) == set(conv.state_dict())


def _conv_norm_block(layer, *, width: int) -> nn.Sequential:
    mods = [nn.Conv2d(3, width, 3, bias=layer is None)]
    if layer is not None:
        mods.append(layer(width))
    mods += [nn.ReLU(), nn.Sequential(nn.Conv2d(width, 4, 1))]
    return nn.Sequential(*mods)


def _bare_conv(layer) -> nn.Conv2d:
    return nn.Conv2d(3, 4, 1)


def _block(name: str) -> nn.Sequential:
    return N.build_with_norm(name, functools.partial(_conv_norm_block, width=16), groups=8)


@pytest.mark.parametrize("name", N.NORM_NAMES)
def test_build_with_norm_applies_the_conv_rule(name):
    """One step: the builder gets the norm layer, and the conv rule (gn_ws: weight
    standardization) reaches every conv of what it built, nested ones included."""
    seen = []

    def build(layer):
        seen.append(layer)
        return _conv_norm_block(layer, width=16)

    block = N.build_with_norm(name, build, groups=8)
    assert len(seen) == 1 and (seen[0] is None) == (name == "none")
    if name in ("gn", "gn_ws"):
        assert block[1].num_groups == 8
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2
    assert all(isinstance(c, WSConv2d) == (name == "gn_ws") for c in convs)
    # a builder may return a bare conv: the rule replaces the root too
    conv = N.build_with_norm(name, _bare_conv)
    assert isinstance(conv, WSConv2d) == (name == "gn_ws")


def test_the_two_step_protocol_is_gone_and_moved_names_are_not_re_exported():
    for moved in ("finalize_component", "WSConv2d", "convert_ws_conv", "param_groups"):
        assert not hasattr(N, moved), moved
        assert moved not in N.__all__


def test_old_import_path_keeps_working():
    from detnorm import norm as old
    from detnorm.solver.param_groups import param_groups

    assert old.norm_layer is N.norm_layer and old.build_with_norm is N.build_with_norm
    assert old.WSConv2d is WSConv2d and old.param_groups is param_groups
    assert isinstance(old.norm_layer("gn", groups=4)(8), nn.GroupNorm)


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
    with pytest.raises(ValueError, match="backbone_norm: unknown norm 'gm'") as err:
        N.validate_norm("gm", "backbone_norm")
    assert err.value.key == "backbone_norm"
