"""Mask R-CNN (ResNet-FPN) with its own norm in each of four components.

The components are the ResNet ``backbone`` body (:mod:`detnorm.modeling.backbone`), the ``fpn``
(:mod:`detnorm.modeling.fpn`), the RoI ``box_head`` and the RoI ``mask_head``
(:mod:`detnorm.modeling.heads`). Each takes a name from :data:`detnorm.layers.norm.NORM_NAMES`
and is built by :func:`detnorm.layers.norm.build_with_norm`, which also applies the norm's conv
rule, so model code never branches on a name. The RPN head has no norm. A convolution followed
by a norm has no bias; one without a norm keeps its bias.

Layouts that match torchvision checkpoints key for key (see :data:`TORCHVISION_LAYOUTS`):

* ``maskrcnn_resnet50_fpn`` (COCO_V1): the default, ``norm="frozen_bn"`` (FrozenBN backbone, no
  FPN or head norm, 2fc head; same as ``norm="none", backbone_norm="frozen_bn"``);
* ``maskrcnn_resnet50_fpn_v2``: ``norm="bn", rpn_conv_depth=2`` (4conv1fc head).

Bad arguments raise :class:`detnorm.errors.ConfigError` with the config key at fault
(``"depth"``, ``"fpn_norm"``, ``"gn_groups"``, ``"box_head"``, ``"model_kwargs.anchor_sizes"``,
...).
"""

from __future__ import annotations

from typing import Any

from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.rpn import AnchorGenerator, RPNHead

from detnorm.errors import ConfigError, check_int
from detnorm.layers.norm import default_for_component, validate_norm
from detnorm.modeling.backbone import (
    DEPTHS,
    build_resnet,
    freeze,
    get_stride_in_1x1,
    set_stride_in_1x1,
)
from detnorm.modeling.fpn import FPN_CHANNELS, fpn_backbone
from detnorm.modeling.heads import BOX_HEADS, build_box_head, build_mask_head, resolve_box_head
from detnorm.modeling.input_transform import DetnormTransform

__all__ = [
    "BOX_HEADS",
    "COMPONENTS",
    "DEPTHS",
    "TORCHVISION_LAYOUTS",
    "build_maskrcnn",
    "get_stride_in_1x1",
    "resolve_norms",
    "set_stride_in_1x1",
]

COMPONENTS = ("backbone", "fpn", "box_head", "mask_head")
DEFAULT_ANCHOR_SIZES = (32, 64, 128, 256, 512)  # torchvision's, for COCO at 800 px
# Parts of torchvision's MaskRCNN that build_maskrcnn builds itself.
_BUILT_HERE = ("rpn_head", "box_head", "mask_head", "backbone", "box_predictor", "mask_predictor")

# build_maskrcnn keywords giving the layouts of torchvision's published Mask R-CNN checkpoints.
TORCHVISION_LAYOUTS: dict[str, dict[str, Any]] = {
    "maskrcnn_resnet50_fpn": {"depth": 50, "norm": "frozen_bn"},
    "maskrcnn_resnet50_fpn_v2": {"depth": 50, "norm": "bn", "rpn_conv_depth": 2},
}


def resolve_norms(
    norm: str = "frozen_bn",
    backbone_norm: str | None = None,
    fpn_norm: str | None = None,
    box_head_norm: str | None = None,
    mask_head_norm: str | None = None,
) -> dict[str, str]:
    """Per-component norm names: each ``*_norm`` that is not ``None`` overrides ``norm``.

    ``norm`` is the default for every component, with one rule from
    :func:`detnorm.layers.norm.default_for_component`: a model-wide ``frozen_bn`` freezes only the
    backbone (the parts built from scratch have no statistics to freeze), so the default
    ``build_maskrcnn(num_classes=...)`` is torchvision's ``maskrcnn_resnet50_fpn`` layout.

    Returns ``{"backbone": ..., "fpn": ..., "box_head": ..., "mask_head": ...}``; raises
    ``ConfigError`` with the argument's key (``"norm"``, ``"fpn_norm"``, ...) when a name is not
    in ``NORM_NAMES``.
    """
    validate_norm(norm, "norm")
    overrides = {
        "backbone": backbone_norm,
        "fpn": fpn_norm,
        "box_head": box_head_norm,
        "mask_head": mask_head_norm,
    }
    return {
        c: default_for_component(norm, pretrained_stats=c == "backbone")
        if name is None
        else validate_norm(name, f"{c}_norm")
        for c, name in overrides.items()
    }


def _anchor_generator(sizes: Any, generator: AnchorGenerator | None) -> AnchorGenerator:
    """One anchor size per FPN level (P2-P6), aspect ratios 0.5, 1, 2 (torchvision's scheme)."""
    key = "model_kwargs.anchor_sizes"
    if generator is not None:
        if sizes is not None:
            raise ConfigError(key, "pass anchor_sizes or rpn_anchor_generator, not both")
        return generator
    sizes = DEFAULT_ANCHOR_SIZES if sizes is None else sizes
    ok = isinstance(sizes, (list, tuple)) and len(sizes) == len(DEFAULT_ANCHOR_SIZES)
    if not ok or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise ConfigError(
            key,
            f"must be {len(DEFAULT_ANCHOR_SIZES)} positive integers (pixels, one per FPN level "
            f"P2-P6), got {sizes!r}",
        )
    return AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * len(sizes))


def build_maskrcnn(
    *,
    num_classes: int,
    depth: int = 50,
    norm: str = "frozen_bn",
    backbone_norm: str | None = None,
    fpn_norm: str | None = None,
    box_head_norm: str | None = None,
    mask_head_norm: str | None = None,
    gn_groups: int = 32,
    box_head: str | None = None,
    trainable_backbone_layers: int | None = None,
    input_format: str = "rgb",
    stride_in_1x1: bool = False,
    rpn_conv_depth: int = 1,
    fpn_channels: int = FPN_CHANNELS,
    box_fc_dim: int = 1024,
    anchor_sizes: tuple[int, ...] | None = None,
    **maskrcnn_kwargs: Any,
) -> MaskRCNN:
    """Build a random-init torchvision ``MaskRCNN`` with a ResNet-FPN and a norm per component.

    Args:
        num_classes: classes INCLUDING background (torchvision convention): K categories -> K + 1.
        depth: ResNet depth, one of 18, 34, 50, 101. FPN inputs are C2..C5 (64..512 channels
            for 18/34, 256..2048 for 50/101); the FPN has ``fpn_channels`` channels and 5
            levels (P2-P6).
        norm: norm of every component unless overridden by ``backbone_norm``, ``fpn_norm``,
            ``box_head_norm``, ``mask_head_norm`` (see :func:`resolve_norms`). A model-wide
            ``frozen_bn`` (the default) applies to the backbone only: the FPN and heads, built
            from scratch with no statistics to freeze, get no norm, which is torchvision's
            ``maskrcnn_resnet50_fpn`` layout. Name ``fpn_norm="frozen_bn"`` (etc.) to put it there.
        gn_groups: groups for ``gn`` and ``gn_ws``.
        box_head: ``"2fc"`` (torchvision's TwoMLPHead) or ``"4conv1fc"`` (4 3x3 convs with the
            box-head norm, then one 1024-d fc). Default: 4conv1fc when the box head has a norm,
            else 2fc. 2fc with a norm is refused (it has no conv to normalize).
        trainable_backbone_layers: 0-5 stages that train, counted from layer4 down to the stem;
            ``None`` means 5 (all). Frozen stages have ``requires_grad=False`` and their BN
            becomes FrozenBN (:func:`detnorm.modeling.backbone.freeze`). Pass 3 when
            fine-tuning from ImageNet weights.
        input_format: ``"rgb"`` (torchvision weights) or ``"caffe2"`` (Detectron weights); see
            :mod:`detnorm.modeling.input_transform`. ``load_weights`` switches it to what the
            weights expect.
        stride_in_1x1: stride in the first 1x1 conv of each stage (MSRA's Caffe2 BN* weights);
            bottleneck depths only.
        rpn_conv_depth: 3x3 convs in the RPN head: 1 as in ``maskrcnn_resnet50_fpn``, 2 as in
            ``maskrcnn_resnet50_fpn_v2``.
        fpn_channels: width of the FPN outputs, the RPN head, and the convolutions of the
            4conv1fc box head and the mask head (256 in every published layout; smaller
            widths make CPU-sized models).
        box_fc_dim: width of the box head's fc layers (1024 in every published layout).
        anchor_sizes: one anchor size in pixels per FPN level P2-P6, each with aspect ratios
            0.5, 1, 2; default ``(32, 64, 128, 256, 512)``, sized for COCO at 800 px. Images
            a few hundred pixels across with objects of 5-50 px need them scaled down (the
            embedded dataset uses ``(8, 16, 32, 64, 128)``): an object much smaller than the
            smallest anchor matches no anchor at IoU 0.7 and trains the RPN only through the
            low-quality match. Not combinable with ``rpn_anchor_generator``.
        maskrcnn_kwargs: passed to torchvision's ``MaskRCNN`` (``min_size``/``max_size`` are the
            EVAL resize, default 800/1333; ``box_score_thresh``, ``rpn_*``, ...). ``image_mean``,
            ``image_std``, ``size_divisible`` and ``fixed_size`` go to :class:`DetnormTransform`.

    Returns:
        ``MaskRCNN`` whose ``transform`` is a :class:`DetnormTransform`. In training it takes
        ``images`` (list of ``(3, H, W)`` float RGB in [0, 1], already resized) and ``targets``
        (``boxes`` ``(N, 4)`` xyxy absolute pixels, ``labels`` ``(N,)`` int64 in 1..K,
        ``masks`` ``(N, H, W)`` uint8) and returns a dict of losses.

    Raises:
        ConfigError: with the config key at fault (``fpn_channels``, ``box_fc_dim``,
        ``anchor_sizes``, ``rpn_conv_depth`` and the torchvision keywords are
        ``model_kwargs.<name>``).
    """
    norms = resolve_norms(norm, backbone_norm, fpn_norm, box_head_norm, mask_head_norm)
    check_int("num_classes", num_classes, 2)
    if depth not in DEPTHS:
        raise ConfigError("depth", f"must be one of {', '.join(map(str, DEPTHS))}, got {depth!r}")
    trainable = 5 if trainable_backbone_layers is None else trainable_backbone_layers
    check_int("trainable_backbone_layers", trainable, 0, 5)
    check_int("model_kwargs.rpn_conv_depth", rpn_conv_depth, 1)
    check_int("gn_groups", gn_groups, 1)
    check_int("model_kwargs.fpn_channels", fpn_channels, 1)
    check_int("model_kwargs.box_fc_dim", box_fc_dim, 1)
    if stride_in_1x1 and depth < 50:
        raise ConfigError("stride_in_1x1", f"needs depth 50 or 101 (bottlenecks), got {depth}")
    for key in _BUILT_HERE:
        if key in maskrcnn_kwargs:
            raise ConfigError(
                f"model_kwargs.{key}", "is built by build_maskrcnn; it cannot be passed in"
            )
    box_head = resolve_box_head(box_head, norms["box_head"])
    transform_kwargs = {
        "min_size": maskrcnn_kwargs.pop("min_size", 800),
        "max_size": maskrcnn_kwargs.pop("max_size", 1333),
        "input_format": input_format,
    }
    for key in ("image_mean", "image_std", "size_divisible", "fixed_size"):
        if key in maskrcnn_kwargs:
            transform_kwargs[key] = maskrcnn_kwargs.pop(key)
    transform = DetnormTransform(**transform_kwargs)

    anchors = _anchor_generator(anchor_sizes, maskrcnn_kwargs.pop("rpn_anchor_generator", None))
    # Construction order fixes the random init: body, FPN, RPN head, box head, mask head.
    body = freeze(build_resnet(depth, norms["backbone"], gn_groups, stride_in_1x1), trainable)
    backbone = fpn_backbone(body, norm=norms["fpn"], channels=fpn_channels, groups=gn_groups)
    rpn_head = RPNHead(
        fpn_channels, anchors.num_anchors_per_location()[0], conv_depth=rpn_conv_depth
    )
    roi_pool = maskrcnn_kwargs.get("box_roi_pool")
    head = build_box_head(
        box_head,
        norm=norms["box_head"],
        channels=fpn_channels,
        resolution=roi_pool.output_size[0] if roi_pool is not None else 7,
        fc_dim=box_fc_dim,
        groups=gn_groups,
    )
    mask_head = build_mask_head(norm=norms["mask_head"], channels=fpn_channels, groups=gn_groups)

    model = MaskRCNN(
        backbone,
        min_size=transform_kwargs["min_size"],
        max_size=transform_kwargs["max_size"],
        rpn_anchor_generator=anchors,
        rpn_head=rpn_head,
        box_head=head,
        mask_head=mask_head,
        box_predictor=FastRCNNPredictor(box_fc_dim, num_classes),
        mask_predictor=MaskRCNNPredictor(fpn_channels, fpn_channels, num_classes),
        **maskrcnn_kwargs,
    )
    model.transform = transform
    return model
