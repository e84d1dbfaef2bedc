"""COCO results: what a model's detections become, and what evaluation accepts as input.

* :func:`predictions_to_coco`: torchvision Mask R-CNN eval outputs (boxes as absolute ``xyxy``
  pixels of the ORIGINAL image) -> COCO result lists (boxes as absolute ``xywh`` pixels of the
  same image; masks as RLE thresholded at > :data:`MASK_THRESHOLD`);
* :func:`gather_predictions`: the results of every DDP rank, each image counted once;
* :func:`save_results`: ``results_{bbox,segm}.json`` and ``metrics.json``, written atomically
  (from :mod:`detnorm.io`);
* :func:`load_results` / :func:`check_results`: result files or lists read and checked against
  a ground truth before :func:`detnorm.evaluation.coco_eval.evaluate_coco` scores them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pycocotools.mask as mask_util
import torch

from detnorm.io import read_json, save_results

__all__ = [
    "IOU_TYPES",
    "MASK_THRESHOLD",
    "check_iou_types",
    "check_results",
    "gather_predictions",
    "load_results",
    "predictions_to_coco",
    "save_results",
]

IOU_TYPES = ("bbox", "segm")
MASK_THRESHOLD = 0.5  # a pixel belongs to the mask when its probability is > 0.5


def check_iou_types(iou_types: Iterable[str]) -> tuple[str, ...]:
    """``iou_types`` (one name or several) as a tuple without repeats; ``ValueError`` if any
    is not in :data:`IOU_TYPES` or there is none."""
    iou_types = (iou_types,) if isinstance(iou_types, str) else tuple(iou_types)
    bad = [t for t in iou_types if t not in IOU_TYPES]
    if bad or not iou_types:
        raise ValueError(f"iou_types {list(iou_types)} invalid; allowed: {', '.join(IOU_TYPES)}")
    return tuple(dict.fromkeys(iou_types))


def predictions_to_coco(
    outputs: Sequence[Mapping[str, torch.Tensor]],
    image_ids: Sequence[int],
    label_to_cat_id: Mapping[int, int],
    iou_types: Iterable[str] = IOU_TYPES,
) -> dict[str, list[dict]]:
    """Convert torchvision MaskRCNN eval outputs to COCO result lists, one per iou type.

    ``outputs[i]`` belongs to ``image_ids[i]`` and holds ``boxes`` (N, 4) float ``xyxy``,
    ``scores`` (N,), ``labels`` (N,) int in 1..K and, for ``"segm"``, ``masks`` (N, 1, H, W)
    float probabilities already pasted at the original image size H x W. Returns
    ``{"bbox": [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...],
    "segm": [{"image_id", "category_id", "segmentation": RLE, "score"}, ...]}`` with RLE
    ``counts`` as str (JSON-ready). Masks are thresholded at > 0.5.
    """
    iou_types = check_iou_types(iou_types)
    if len(outputs) != len(image_ids):
        raise ValueError(f"got {len(outputs)} outputs but {len(image_ids)} image_ids")
    results: dict[str, list[dict]] = {t: [] for t in iou_types}
    for out, image_id in zip(outputs, image_ids, strict=True):
        image_id = int(image_id)
        scores = out["scores"].detach().cpu().tolist()
        if not scores:
            continue
        try:
            cat_ids = [label_to_cat_id[label] for label in out["labels"].detach().cpu().tolist()]
        except KeyError as e:
            raise ValueError(
                f"label {e.args[0]} (image {image_id}) is not in label_to_cat_id; "
                f"known labels: {sorted(label_to_cat_id)}"
            ) from None
        if "bbox" in results:
            boxes = out["boxes"].detach().float().cpu()
            xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
            results["bbox"].extend(
                {"image_id": image_id, "category_id": c, "bbox": b, "score": s}
                for c, b, s in zip(cat_ids, xywh, scores, strict=True)
            )
        if "segm" in results:
            if "masks" not in out:
                raise ValueError(f"segm requested but the output for image {image_id} has no masks")
            masks = out["masks"].detach()
            masks = masks[:, 0] if masks.dim() == 4 else masks  # (N, H, W)
            # (N, W, H) C-contiguous is (H, W, N) Fortran-ordered: what RLE encode wants.
            binary = (masks > MASK_THRESHOLD).transpose(1, 2).contiguous().to(torch.uint8)
            rles = mask_util.encode(binary.cpu().numpy().transpose(2, 1, 0))
            for rle in rles:
                rle["counts"] = rle["counts"].decode("ascii")
            results["segm"].extend(
                {"image_id": image_id, "category_id": c, "segmentation": r, "score": s}
                for c, r, s in zip(cat_ids, rles, scores, strict=True)
            )
    return results


def load_results(results: Any, iou_types: tuple[str, ...]) -> dict[str, list]:
    """Map each iou type to its result list. A bare list or json path serves every iou type."""
    if isinstance(results, (str, os.PathLike)):
        results = read_json(results, "results")
    if isinstance(results, Mapping):
        missing = [t for t in iou_types if t not in results]
        if missing:
            raise ValueError(f"results have no entry for iou type(s) {', '.join(missing)}")
        out = {t: results[t] for t in iou_types}
        for t, v in out.items():
            if isinstance(v, (str, os.PathLike)):
                out[t] = read_json(v, f"{t} results")
    else:
        out = dict.fromkeys(iou_types, results)
    for t, v in out.items():
        if not isinstance(v, list) or not all(isinstance(r, dict) for r in v):
            raise ValueError(f"{t} results must be a JSON list of objects (COCO results format)")
    return out


def check_results(gt_dataset: dict, results: list[dict], iou_type: str) -> None:
    """Raise ``ValueError`` naming what is wrong if ``results`` can't be scored against the GT."""
    for key in ("image_id", "category_id", "score"):
        if any(key not in r for r in results):
            raise ValueError(f"{iou_type} results: some entries lack '{key}'")
    if iou_type == "segm" and any("segmentation" not in r for r in results):
        raise ValueError("segm results: some entries lack 'segmentation' (an RLE dict)")
    if iou_type == "bbox":
        with_box = sum("bbox" in r for r in results)
        if with_box != len(results) and (with_box or any("segmentation" not in r for r in results)):
            raise ValueError("bbox results: some entries lack 'bbox' ([x, y, w, h])")
    for key, name, known in (
        ("image_id", "image ids", {img["id"] for img in gt_dataset["images"]}),
        ("category_id", "category ids", {cat["id"] for cat in gt_dataset["categories"]}),
    ):
        unknown = _sorted({r[key] for r in results} - known)
        if unknown:
            shown = ", ".join(map(str, unknown[:10])) + (", ..." if len(unknown) > 10 else "")
            raise ValueError(
                f"{iou_type} results reference {len(unknown)} {name} not in the ground truth: {shown}"
            )


def _sorted(values: set) -> list:
    try:
        return sorted(values)
    except TypeError:  # mixed types in a malformed file
        return sorted(values, key=repr)


def gather_predictions(local_list: Sequence[Mapping], group=None) -> list:
    """Gather items with an ``"image_id"`` key (COCO result dicts) from all DDP ranks.

    Identity (as a new list) when torch.distributed is not initialized or has one rank.
    Otherwise every rank gets all ranks' items in rank order, keeping each image's items only
    from the lowest rank that reported that image: DistributedSampler pads its last batch with
    repeated images, which must count once. Collective: every rank of ``group`` must call it.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return list(local_list)
    gathered: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, list(local_list), group=group)
    owner: dict[Any, int] = {}
    merged = []
    for rank, items in enumerate(gathered):
        for item in items:
            if owner.setdefault(item["image_id"], rank) == rank:
                merged.append(item)
    return merged
