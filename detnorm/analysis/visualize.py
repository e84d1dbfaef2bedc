"""Draw Mask R-CNN predictions (masks, boxes, "class score" labels) on images and save PNGs.

Conventions: images are ``(3, H, W)`` RGB tensors, either ``uint8`` or float in ``[0, 1]``.
A prediction is one torchvision ``MaskRCNN`` eval output dict for that image, in the image's
own pixel coordinates: ``boxes`` ``(N, 4)`` float xyxy absolute pixels, ``labels`` ``(N,)``
int64 in ``1..K``, ``scores`` ``(N,)`` float, and optionally ``masks`` ``(N, 1, H, W)`` float
probabilities (or ``(N, H, W)`` bool/uint8). ``category_names[label - 1]`` names label ``label``.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from detnorm.data.image_io import read_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Distinct, saturated colors (RGB) that stay visible both as a fill and as a box outline.
PALETTE = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128),
    (170, 110, 40), (255, 225, 25), (128, 0, 0), (0, 0, 128), (128, 128, 0),
)  # fmt: skip


def instance_colors(n: int) -> list[tuple[int, int, int]]:
    """``n`` RGB colors, one per instance, cycling through :data:`PALETTE`."""
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


@functools.lru_cache(maxsize=1)
def _font_path() -> str | None:
    """A TrueType font file (matplotlib ships DejaVu Sans), or None for PIL's bitmap font."""
    try:
        from matplotlib import font_manager

        return font_manager.findfont("DejaVu Sans", fallback_to_default=True)
    except Exception:  # noqa: BLE001 - any failure just means the small default font
        return None


def _to_uint8(image: Tensor) -> Tensor:
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image tensor of shape (3, H, W), got {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return image
    return (image.float().clamp(0, 1) * 255).round().to(torch.uint8)


def label_text(label: int, score: float | None, category_names: Sequence[str] | None) -> str:
    """``"name 0.93"`` (``"name"`` for ``score=None``); the label number stands in for a name
    that is not known."""
    names = category_names or ()
    name = names[label - 1] if 1 <= label <= len(names) else str(label)
    return name if score is None else f"{name} {score:.2f}"


def draw_predictions(
    image: Tensor,
    prediction: dict[str, Tensor],
    category_names: Sequence[str] | None = None,
    *,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    alpha: float = 0.5,
    show_scores: bool = True,
) -> Tensor:
    """Draw the detections with ``score >= score_threshold`` onto a copy of ``image``.

    Each kept instance gets one color: its mask (probability ``>= mask_threshold``) is filled
    with that color at opacity ``alpha``, then its box is outlined and labelled "class score"
    ("class" alone with ``show_scores=False``, as for ground truth). Returns a ``(3, H, W)`` uint8 tensor; with nothing kept it equals the input (as uint8).
    """
    canvas = _to_uint8(image.detach().cpu())
    height, width = canvas.shape[1:]
    keep = prediction["scores"].detach().cpu() >= score_threshold
    if not bool(keep.any()):
        return canvas.clone()
    boxes = prediction["boxes"].detach().cpu()[keep].float()
    labels = prediction["labels"].detach().cpu()[keep].tolist()
    scores = prediction["scores"].detach().cpu()[keep].tolist()
    colors = instance_colors(len(labels))
    masks = prediction.get("masks")
    if masks is not None:
        masks = masks.detach().cpu()[keep]
        masks = masks[:, 0] if masks.ndim == 4 else masks
        if masks.shape[-2:] != (height, width):
            raise ValueError(
                f"masks are {tuple(masks.shape[-2:])} but the image is {(height, width)}; "
                "predictions must be in the image's own coordinates"
            )
        masks = masks >= mask_threshold if masks.is_floating_point() else masks.bool()
        canvas = draw_segmentation_masks(canvas, masks, alpha=alpha, colors=colors)
    short = min(height, width)
    font = _font_path()
    text_colors = [
        "black" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "white" for r, g, b in colors
    ]
    return draw_bounding_boxes(
        canvas,
        boxes,
        labels=[
            label_text(lab, s if show_scores else None, category_names)
            for lab, s in zip(labels, scores, strict=True)
        ],
        colors=colors,
        width=max(2, round(short / 250)),
        font=font,
        font_size=max(10, round(short / 40)) if font else None,
        label_colors=text_colors,
        label_background_colors=colors,
        fill_labels=True,
    )


def upscale_factor(height: int, width: int, min_side: int = 512) -> int:
    """The smallest integer factor that brings the short side to ``min_side`` or more.

    1 for images already that large, and for ``min_side <= 0`` (no upscaling). Labels are drawn
    at about ``short side / 40`` px, so 512 gives text of 13 px on a 64 px image.
    """
    if min_side <= 0:
        return 1
    return max(1, math.ceil(min_side / max(1, min(height, width))))


def upscale(image: Tensor, instances: dict[str, Tensor], factor: int) -> tuple[Tensor, dict]:
    """``image`` (3, H, W) and its ``instances`` scaled by ``factor`` -> (3, fH, fW) and a new dict.

    ``boxes`` (N, 4) xyxy are multiplied; ``masks`` are resized to (fH, fW): float probabilities
    ``(N, 1, H, W)`` or ``(N, H, W)`` bilinearly, bool/uint8 masks by nearest neighbour. Other
    entries (labels, scores) are kept. The image is resized bilinearly (uint8 stays uint8).
    """
    if factor == 1:
        return image, dict(instances)
    height, width = image.shape[-2:]
    size = (height * factor, width * factor)
    dtype = image.dtype
    big = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    big = big.round().clamp(0, 255).to(dtype) if dtype == torch.uint8 else big.to(dtype)
    out = dict(instances)
    out["boxes"] = instances["boxes"].float() * factor
    masks = instances.get("masks")
    if masks is not None:
        m = masks if masks.ndim == 4 else masks[:, None]
        if m.is_floating_point():
            m = F.interpolate(m.float(), size=size, mode="bilinear", align_corners=False)
        else:
            m = F.interpolate(m.to(torch.uint8), size=size, mode="nearest").to(masks.dtype)
        out["masks"] = m if masks.ndim == 4 else m[:, 0]
    return big, out


def keep_scores(instances: dict[str, Tensor], score_threshold: float) -> dict[str, Tensor]:
    """The instances with ``scores >= score_threshold`` (every per-instance entry filtered)."""
    keep = instances["scores"] >= score_threshold
    return {k: v[keep] if torch.is_tensor(v) and v.shape[:1] == keep.shape else v
            for k, v in instances.items()}  # fmt: skip


@torch.inference_mode()
def predict_image(
    model: torch.nn.Module,
    image: Tensor,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> dict:
    """Run ``model`` (a torchvision MaskRCNN, put in eval mode) on one ``(3, H, W)`` image.

    uint8 images are scaled to float ``[0, 1]``. ``autocast_dtype`` (e.g. ``torch.bfloat16``)
    runs the forward under ``torch.autocast`` on the device. Returns the output dict on the CPU,
    floats as float32, in the image's original coordinates (the model's transform resizes and
    maps back).
    """
    model.eval()
    x = image.float() / 255 if image.dtype == torch.uint8 else image.float()
    device = torch.device(device)
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        output = model([x.to(device)])[0]
    return {k: v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()
            for k, v in output.items()}  # fmt: skip


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def collect_images(
    inputs: Iterable[str | os.PathLike], output_dir: str | os.PathLike
) -> list[tuple[Path, Path]]:
    """Pair each input image with its output PNG path.

    A file argument ``a/b.jpg`` gives ``OUT/b.png``; a directory argument is searched
    recursively for files with an image suffix (others are skipped) and ``DIR/x/c.jpg`` gives
    ``OUT/x/c.png``. ``ValueError`` naming the path for a missing path, a file that is not an
    image, two inputs that would write the same PNG, or an output that would overwrite an input.
    """
    pairs: list[tuple[Path, Path]] = []
    out = Path(output_dir)
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _is_image(p))
            if not found:
                raise ValueError(
                    f"no image files ({', '.join(IMAGE_SUFFIXES)}) in directory {path}"
                )
            pairs += [(p, out / p.relative_to(path).with_suffix(".png")) for p in found]
        elif path.is_file():
            if not _is_image(path):
                raise ValueError(
                    f"not an image file: {path} (allowed suffixes: {', '.join(IMAGE_SUFFIXES)})"
                )
            pairs.append((path, out / f"{path.stem}.png"))
        else:
            raise ValueError(f"image file or directory not found: {path}")
    seen: dict[Path, Path] = {}
    sources = {src.resolve() for src, _ in pairs}
    for src, dst in pairs:
        if dst.resolve() in sources:
            raise ValueError(
                f"output {dst} would overwrite the input image; choose another --output-dir"
            )
        if dst in seen:
            raise ValueError(f"{seen[dst]} and {src} would both be written to {dst}")
        seen[dst] = src
    return pairs


def predict_files(
    model: torch.nn.Module,
    inputs: Iterable[str | os.PathLike],
    output_dir: str | os.PathLike,
    category_names: Sequence[str] | None = None,
    *,
    score_threshold: float = 0.5,
    device: str | torch.device = "cpu",
    log: Callable[[str], object] = print,
    min_side: int = 0,
    autocast_dtype: torch.dtype | None = None,
) -> list[Path]:
    """Predict on every input image and write the drawn PNGs; return the written paths.

    ``min_side > 0`` upscales images whose short side is smaller by an integer factor
    (:func:`upscale_factor`) before drawing, so the labels stay readable; 0 keeps the size.
    All inputs are checked before the first prediction, so a bad argument fails fast.
    Unreadable images raise ``OSError`` naming the file.
    """
    from PIL import Image

    pairs = collect_images(inputs, output_dir)
    model.to(device).eval()
    written = []
    for src, dst in pairs:
        image = torch.from_numpy(read_image(src)).permute(2, 0, 1).contiguous()  # (3, H, W) uint8
        prediction = predict_image(model, image, device, autocast_dtype)
        factor = upscale_factor(*image.shape[-2:], min_side)
        big, shown = upscale(image, keep_scores(prediction, score_threshold), factor)
        drawn = draw_predictions(big, shown, category_names, score_threshold=score_threshold)
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(dst)
        kept = int((prediction["scores"] >= score_threshold).sum())
        log(f"{src} -> {dst}: {kept} detection(s) with score >= {score_threshold:g}")
        written.append(dst)
    return written
