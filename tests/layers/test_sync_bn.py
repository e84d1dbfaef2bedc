"""detnorm.layers.sync_bn.SyncBatchNorm against nn.BatchNorm2d, in one process and across 2 gloo ranks.

The distributed reference is single-process nn.BatchNorm2d on the joined batch: every rank's
(N_r, C, H_r, W_r) input is flattened to (C, N_r*H_r*W_r), the ranks are concatenated along the
second axis and normalized as one (1, C, L, 1) image, so ranks with different N, H and W are
weighted by their element counts. The joined loss is the sum of the ranks' losses.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.distributed as dist
from helpers.dist_utils import run_distributed
from torch import nn

from detnorm.layers.sync_bn import SyncBatchNorm

C = 4
ATOL = 1e-5


def _rand_bn(cls=nn.BatchNorm2d, seed=0, **kwargs):
    gen = torch.Generator().manual_seed(seed)
    m = cls(C, **kwargs)
    with torch.no_grad():
        m.weight.copy_(torch.rand(C, generator=gen) + 0.5)
        m.bias.copy_(torch.randn(C, generator=gen))
        m.running_mean.copy_(torch.randn(C, generator=gen))
        m.running_var.copy_(torch.rand(C, generator=gen) + 0.5)
    return m


def _step(m, x, g):
    """One training forward/backward; returns output, input grad and a snapshot of the module."""
    x = x.clone().requires_grad_(True)
    y = m(x)
    (y * g).sum().backward()
    return {
        "y": y.detach(),
        "dx": x.grad,
        "dw": m.weight.grad.clone(),
        "db": m.bias.grad.clone(),
        "rm": m.running_mean.clone(),
        "rv": m.running_var.clone(),
        "nbt": int(m.num_batches_tracked),
    }


def _shapes_data(shapes, seed):
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn(s, generator=gen) * 3 + 5 for s in shapes]  # offset mean: stability check
    gs = [torch.randn(s, generator=gen) for s in shapes]
    return xs, gs


def _joined_reference(xs, gs, momentum=0.1):
    """nn.BatchNorm2d on the joined batch; returns per-rank y/dx and the shared module state."""
    bn = _rand_bn(momentum=momentum)
    flat = [x.clone().requires_grad_(True) for x in xs]
    z = torch.cat([f.transpose(0, 1).reshape(C, -1) for f in flat], dim=1)[None, :, :, None]
    gz = torch.cat([g.transpose(0, 1).reshape(C, -1) for g in gs], dim=1)[None, :, :, None]
    y = bn(z)
    (y * gz).sum().backward()
    ys, start = [], 0
    for x in xs:
        n = x.numel() // C
        part = y[0, :, start : start + n, 0].detach().reshape(C, x.shape[0], *x.shape[2:])
        ys.append(part.transpose(0, 1))
        start += n
    return {
        "y": ys,
        "dx": [f.grad for f in flat],
        "dw": bn.weight.grad,
        "db": bn.bias.grad,
        "rm": bn.running_mean,
        "rv": bn.running_var,
        "nbt": int(bn.num_batches_tracked),
    }


# Scenarios run across 2 ranks: per-rank input shapes (N, C, H, W).
SCENARIOS = {
    "one_image_each": [(1, C, 5, 6), (1, C, 5, 6)],
    "rank0_empty": [(0, C, 5, 6), (2, C, 5, 6)],
    "uneven_1_vs_3": [(1, C, 6, 5), (3, C, 4, 4)],
}


def _ddp_batch(sizes, seed):
    """Per-rank RGB inputs (N_r, 3, 6, 6) and upstream grads (N_r, C, 6, 6) for ``_Net``."""
    xs, _ = _shapes_data([(n, 3, 6, 6) for n in sizes], seed)
    _, gs = _shapes_data([(n, C, 6, 6) for n in sizes], seed + 100)
    return xs, gs


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, C, 3, padding=1, bias=False)
        self.norm = SyncBatchNorm(C)

    def forward(self, x):
        return torch.relu(self.norm(self.conv(x)))


def _dist_worker(rank, world_size, data, ddp_data, net_state):
    from torch.nn.parallel import DistributedDataParallel as DDP

    out = {}
    for name, (xs, gs) in data.items():
        out[name] = _step(_rand_bn(SyncBatchNorm), xs[rank], gs[rank])

    # Whole group empty: no NaN, running stats and num_batches_tracked untouched.
    m = _rand_bn(SyncBatchNorm)
    out["all_empty"] = _step(m, torch.zeros(0, C, 5, 6), torch.zeros(0, C, 5, 6))

    # Global count of 1 raises on every rank (as BN does), so no rank is left waiting.
    try:
        _rand_bn(SyncBatchNorm)(torch.ones(rank, C, 1, 1))
        out["count1"] = None
    except ValueError as e:
        out["count1"] = str(e)

    # Eval mode: running stats, no collective (uneven call counts would deadlock otherwise).
    m = _rand_bn(SyncBatchNorm).eval()
    for _ in range(1 + 2 * rank):
        y_eval = m(data["uneven_1_vs_3"][0][rank])
    out["eval"] = y_eval

    # Inside DDP: two steps with batch sizes (1, 2) then (0, 2); grads averaged by DDP.
    net = _Net()
    net.load_state_dict(net_state)
    ddp = DDP(net)
    out["ddp"] = []
    for xs, gs in ddp_data:
        ddp.zero_grad()
        (ddp(xs[rank]) * gs[rank]).sum().backward()
        out["ddp"].append({k: p.grad.clone() for k, p in net.named_parameters()})
    out["ddp_state"] = {k: v.clone() for k, v in net.state_dict().items()}

    # A custom group survives deepcopy (shared handle); pickling drops it with a warning.
    group = dist.new_group([0, 1])
    m = SyncBatchNorm(C, process_group=group)
    out["deepcopy_shares_group"] = copy.deepcopy(m).process_group is group
    with pytest.warns(UserWarning, match="process group"):
        out["unpickled_group"] = pickle.loads(pickle.dumps(m)).process_group
    return out


@pytest.fixture(scope="module")
def dist_run():
    data = {n: _shapes_data(s, seed=i) for i, (n, s) in enumerate(SCENARIOS.items())}
    ddp_data = [_ddp_batch((1, 2), seed=10), _ddp_batch((0, 2), seed=11)]
    torch.manual_seed(0)
    net_state = _Net().state_dict()
    results = run_distributed(_dist_worker, 2, args=(data, ddp_data, net_state), timeout=60)
    return data, ddp_data, net_state, results


def _assert_close(a, b, what):
    assert a.shape == b.shape, what
    torch.testing.assert_close(a, b, atol=ATOL, rtol=1e-5, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_two_ranks_match_bn_on_joined_batch(dist_run, name):
    data, _, _, results = dist_run
    xs, gs = data[name]
    ref = _joined_reference(xs, gs)
    for rank, res in enumerate(results):
        r = res[name]
        _assert_close(r["y"], ref["y"][rank], f"{name} rank {rank} output")
        _assert_close(r["dx"], ref["dx"][rank], f"{name} rank {rank} input grad")
        for key in ("rm", "rv"):
            _assert_close(r[key], ref[key], f"{name} rank {rank} {key}")
        assert r["nbt"] == ref["nbt"] == 1
        for t in r.values():
            assert not (isinstance(t, torch.Tensor) and t.isnan().any()), name
    # Parameter grads are local; their sum over ranks is the joined-batch grad.
    for key in ("dw", "db"):
        _assert_close(sum(res[name][key] for res in results), ref[key], f"{name} {key}")


def test_empty_rank_output_is_empty(dist_run):
    _, _, _, results = dist_run
    r = results[0]["rank0_empty"]
    assert r["y"].shape == (0, C, 5, 6) and r["dx"].shape == (0, C, 5, 6)
    assert torch.equal(r["dw"], torch.zeros(C)) and torch.equal(r["db"], torch.zeros(C))


def test_all_ranks_empty_leaves_running_stats(dist_run):
    _, _, _, results = dist_run
    init = _rand_bn(SyncBatchNorm)
    for res in results:
        r = res["all_empty"]
        assert r["y"].shape == (0, C, 5, 6)
        assert torch.equal(r["rm"], init.running_mean) and torch.equal(r["rv"], init.running_var)
        assert r["nbt"] == 0
        assert torch.equal(r["dw"], torch.zeros(C))


def test_global_count_one_raises_on_every_rank(dist_run):
    _, _, _, results = dist_run
    for res in results:
        assert res["count1"] is not None and "more than 1 value" in res["count1"]


def test_eval_mode_uses_running_stats_without_sync(dist_run):
    data, _, _, results = dist_run
    bn = _rand_bn().eval()
    for rank, res in enumerate(results):
        _assert_close(res["eval"], bn(data["uneven_1_vs_3"][0][rank]).detach(), "eval")


def test_inside_ddp_matches_joined_batch(dist_run):
    _, ddp_data, net_state, results = dist_run
    net = _Net()  # no process group in this process: plain BN on the joined batch
    net.load_state_dict(net_state)
    for step, (xs, gs) in enumerate(ddp_data):
        net.zero_grad()
        keep = [i for i, x in enumerate(xs) if len(x)]
        x = torch.cat([xs[i] for i in keep])
        (net(x) * torch.cat([gs[i] for i in keep])).sum().backward()
        for k, p in net.named_parameters():
            for res in results:  # DDP averages: grad * world_size == summed joined grad
                _assert_close(res["ddp"][step][k] * 2, p.grad, f"ddp step {step} {k}")
    for res in results:
        for k, v in net.state_dict().items():
            assert torch.allclose(res["ddp_state"][k].double(), v.double(), atol=ATOL), k


def test_process_group_copy_semantics(dist_run):
    _, _, _, results = dist_run
    for res in results:
        assert res["deepcopy_shares_group"] is True
        assert res["unpickled_group"] is None


# ---------------------------------------------------------------- no process group


@pytest.mark.parametrize("momentum", [0.1, None])
def test_no_process_group_equals_batchnorm(momentum):
    assert not dist.is_initialized()
    bn, sbn = _rand_bn(momentum=momentum), _rand_bn(SyncBatchNorm, momentum=momentum)
    for seed in (0, 1):  # two steps: running-stat momentum / cumulative average
        bn.zero_grad()
        sbn.zero_grad()
        (x,), (g,) = _shapes_data([(2, C, 5, 6)], seed)
        a, b = _step(bn, x, g), _step(sbn, x, g)
        for k in a:
            assert (a[k] == b[k]) if k == "nbt" else torch.equal(a[k], b[k]), k


def test_eval_mode_uses_running_stats():
    sbn = _rand_bn(SyncBatchNorm).eval()
    (x,), _ = _shapes_data([(2, C, 5, 6)], 0)
    expected = (x - sbn.running_mean[:, None, None]) / torch.sqrt(
        sbn.running_var[:, None, None] + sbn.eps
    ) * sbn.weight[:, None, None] + sbn.bias[:, None, None]
    _assert_close(sbn(x).detach(), expected, "eval")
    assert int(sbn.num_batches_tracked) == 0


def test_from_batchnorm_round_trip():
    bn = _rand_bn(momentum=0.3, eps=1e-3)
    bn.num_batches_tracked.fill_(7)
    bn.weight.requires_grad_(False)
    bn.eval()
    sbn = SyncBatchNorm.from_batchnorm(bn)
    assert type(sbn) is SyncBatchNorm and not sbn.training
    assert (sbn.eps, sbn.momentum, sbn.affine) == (1e-3, 0.3, True)
    assert not sbn.weight.requires_grad and sbn.bias.requires_grad
    assert list(sbn.state_dict()) == list(bn.state_dict())
    for k, v in bn.state_dict().items():
        assert torch.equal(sbn.state_dict()[k], v) and sbn.state_dict()[k] is not v, k
    back = nn.BatchNorm2d(C, momentum=0.3, eps=1e-3).eval()
    back.load_state_dict(sbn.state_dict(), strict=True)
    (x,), _ = _shapes_data([(2, C, 5, 6)], 3)
    assert torch.equal(back(x), sbn(x)) and torch.equal(bn(x), sbn(x))
    with pytest.raises(TypeError, match="BatchNorm2d"):
        SyncBatchNorm.from_batchnorm(nn.BatchNorm1d(C))


def test_pickle_and_deepcopy():
    sbn = _rand_bn(SyncBatchNorm)
    for clone in (pickle.loads(pickle.dumps(sbn)), copy.deepcopy(sbn)):
        assert type(clone) is SyncBatchNorm and clone.process_group is None
        for k, v in sbn.state_dict().items():
            assert torch.equal(clone.state_dict()[k], v), k
        assert clone.weight is not sbn.weight
