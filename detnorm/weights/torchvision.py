"""torchvision Mask R-CNN checkpoints (and detnorm's, which share their keys) in a detnorm model.

* :func:`upgrade_legacy_keys`: the key names of torchvision < 0.12 (RPN conv, mask head);
* :data:`CLASS_LAYERS`: the class-specific predictor layers. A checkpoint with another class
  count drops them (:func:`drop_mismatched_class_layers`) and the model gets fresh ones
  (:func:`reinit_class_layers`, detectron2's initialization);
* :func:`match_coco_v1_eps`: torchvision's ``maskrcnn_resnet50_fpn`` COCO_V1 weights expect
  FrozenBN with ``eps=0``.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from detnorm.layers.norm import FrozenBatchNorm2d

__all__ = [
    "CLASS_LAYERS",
    "drop_mismatched_class_layers",
    "match_coco_v1_eps",
    "reinit_class_layers",
    "upgrade_legacy_keys",
]

CLASS_LAYERS = ("roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred",
                "roi_heads.mask_predictor.mask_fcn_logits")  # fmt: skip


def upgrade_legacy_keys(state: dict) -> int:
    """Rename keys of torchvision < 0.12 checkpoints (RPN conv, mask head) in place; returns
    how many were renamed."""
    renames = {
        "rpn.head.conv.weight": "rpn.head.conv.0.0.weight",
        "rpn.head.conv.bias": "rpn.head.conv.0.0.bias",
    }
    for key in list(state):
        m = re.fullmatch(r"roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)", key)
        if m:
            renames[key] = f"roi_heads.mask_head.{int(m.group(1)) - 1}.0.{m.group(2)}"
    moved = [k for k in renames if k in state]
    for key in moved:
        state[renames[key]] = state.pop(key)
    return len(moved)


def drop_mismatched_class_layers(state: dict, expected: dict) -> tuple[dict, list[str]]:
    """``state`` without the :data:`CLASS_LAYERS` whose weight shape differs from the model's
    (``expected``: its state_dict), and the names of those layers, in ``CLASS_LAYERS`` order."""
    dropped = []
    for name in CLASS_LAYERS:
        key = f"{name}.weight"
        if key in state and key in expected and state[key].shape != expected[key].shape:
            dropped.append(name)
            state = {k: v for k, v in state.items() if not k.startswith(name + ".")}
    return state, dropped


def reinit_class_layers(model: nn.Module, names: list[str]) -> None:
    """Detectron2's init for new predictors: N(0, 0.01) scores, N(0, 0.001) boxes/masks, zero bias."""
    for name in names:
        layer = model.get_submodule(name)
        nn.init.normal_(layer.weight, std=0.01 if name.endswith("cls_score") else 0.001)
        nn.init.zeros_(layer.bias)


def match_coco_v1_eps(model: nn.Module, path: Path) -> bool:
    """Set every FrozenBN's ``eps`` to 0 when ``path`` is torchvision's ``maskrcnn_resnet50_fpn``
    COCO_V1 file, as torchvision does for those weights; returns whether it did."""
    if not path.name.startswith("maskrcnn_resnet50_fpn_coco-"):
        return False
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.eps = 0.0
    return True
