"""CUDA checks, run with ``pytest -m gpu`` on a machine with a GPU (skipped elsewhere):
every norm trains on CUDA in fp32 and under bf16 autocast, and sync_bn without a process
group equals BatchNorm on CUDA."""

import pytest
import torch
from torch import nn

from detnorm.layers.norm import NORM_NAMES, SyncBatchNorm
from detnorm.modeling.maskrcnn import build_maskrcnn

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _target(device):
    masks = torch.zeros(1, 96, 128, dtype=torch.uint8, device=device)
    masks[0, 20:60, 30:90] = 1
    return {
        "boxes": torch.tensor([[30.0, 20.0, 90.0, 60.0]], device=device),
        "labels": torch.tensor([1], device=device),
        "masks": masks,
    }


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("norm", NORM_NAMES)
def test_training_step_on_cuda(norm, dtype):
    device = torch.device("cuda")
    model = build_maskrcnn(num_classes=3, depth=18, norm=norm, min_size=96, max_size=128)
    model.to(device).train()
    images = [torch.rand(3, 96, 128, device=device) for _ in range(2)]
    targets = [_target(device), _target(device)]
    with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        losses = model(images, targets)
    loss = sum(losses.values())
    assert torch.isfinite(loss), {k: float(v) for k, v in losses.items()}
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_sync_bn_without_process_group_is_bn_on_cuda():
    x = torch.randn(4, 16, 9, 9, device="cuda", requires_grad=True)
    sbn, bn = SyncBatchNorm(16).cuda(), nn.BatchNorm2d(16).cuda()
    out, ref = sbn(x), bn(x)
    torch.testing.assert_close(out, ref)
    (g_out,) = torch.autograd.grad(out.square().sum(), x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(g_out, g_ref)
    torch.testing.assert_close(sbn.running_var, bn.running_var)
