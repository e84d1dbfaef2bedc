"""Shared by the weight-loading tests: quiet loads and randomized models."""

import torch

QUIET = dict(logger=lambda s: None)


def randomize(module, seed=0):
    """Random parameters and norm statistics, so a load that does nothing cannot pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                fresh = torch.rand(t.shape, generator=g) + 0.5 if "var" in name else None
                t.copy_(fresh if fresh is not None else torch.randn(t.shape, generator=g) * 0.1)
    return module
