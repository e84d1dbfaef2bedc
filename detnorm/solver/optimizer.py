"""The optimizer: SGD with momentum (the GN paper's recipe) or AdamW, over the same two
parameter groups.

Both get :func:`detnorm.solver.param_groups.param_groups`: weight decay ``weight_decay`` on
every trainable parameter except norm parameters (GN/BN affine weights and biases), which get
``norm_weight_decay`` (0 by default, as in the GN paper and detectron2's ``solver/build.py``).
AdamW applies that decay decoupled from the gradient (Loshchilov & Hutter); SGD adds it to the
gradient. The LR schedule (``detnorm.solver.schedule``) multiplies the group LRs either way, so
warmup and step or cosine decay apply to both.
"""

from __future__ import annotations

import torch
from torch import nn

from detnorm.errors import ConfigError
from detnorm.solver.param_groups import param_groups

__all__ = ["ADAMW_BETAS", "OPTIMIZERS", "build_optimizer"]

OPTIMIZERS = ("sgd", "adamw")
ADAMW_BETAS = (0.9, 0.999)  # torch's defaults, as in torchvision's detection references


def build_optimizer(
    model: nn.Module,
    name: str = "sgd",
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    norm_weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` (``momentum``) or ``torch.optim.AdamW`` (``ADAMW_BETAS``; ``momentum``
    unused) over ``param_groups(model)``: groups named ``"default"`` and ``"norm"``, each with its
    own ``weight_decay``, all starting at ``lr``. Raises ``ConfigError`` (key ``"optimizer"``) on an
    unknown ``name``."""
    groups = param_groups(model, weight_decay=weight_decay, norm_weight_decay=norm_weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=ADAMW_BETAS)
    raise ConfigError("optimizer", f"unknown {name!r}; allowed: {', '.join(OPTIMIZERS)}")
