"""``detnorm-analyze RUN_DIR`` / ``tools/analyze.py``: why is the AP what it is?

Reads a run's ``results_{bbox,segm}.json`` (written by training or ``tools/eval.py``) and the
validation ground truth named in its ``config.yaml`` (or ``--ann`` / ``--images``), and writes
to ``--output-dir`` (default ``RUN_DIR/analysis``): PR curves at IoU 0.5 and 0.75, confusion
matrices over categories + background at IoU 0.5, the ``--worst`` N validation images with
ground truth and predictions side by side, and ``analysis.md`` linking them
(file list: :mod:`detnorm.analysis.error_report`). Bad input exits 2 with one line naming it.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import torch
import yaml
from tqdm import tqdm

from detnorm.analysis import error_analysis as A
from detnorm.analysis import error_report as R
from detnorm.evaluation import (
    BACKENDS,
    DEFAULT_BACKEND,
    IOU_TYPES,
    check_results,
    load_gt_dataset,
)
from detnorm.io import read_json

PROG = "detnorm-analyze"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="run directory (or any folder with results_*.json)")
    p.add_argument("--results-dir", type=Path, help="folder of results_{bbox,segm}.json "
                   "(default: RUN_DIR, else RUN_DIR/eval)")  # fmt: skip
    p.add_argument("--ann", type=Path, help="ground-truth COCO JSON (default: config.yaml val_ann)")
    p.add_argument("--images", type=Path, help="its image folder (default: config.yaml val_images)")
    p.add_argument("--output-dir", type=Path, help="where to write (default: RUN_DIR/analysis)")
    p.add_argument("--worst", type=int, default=8, metavar="N", help="worst images to draw (8)")
    p.add_argument("--score-threshold", type=float, default=0.5,
                   help="detections counted in the confusion matrix and worst images (0.5)")  # fmt: skip
    p.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND, help="COCOeval engine")
    return p


def _inputs(args) -> tuple[dict[str, list], Path, Path, Path | None]:
    """``({iou_type: results}, results folder, gt path, images folder or None)``."""
    run = args.run_dir
    if not run.is_dir():
        raise ValueError(f"run directory not found: {run}")
    cfg = {}
    if (run / "config.yaml").is_file():
        cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    folders = [args.results_dir] if args.results_dir else [run, run / "eval"]
    folder = next((f for f in folders if any((f / f"results_{t}.json").is_file()
                                            for t in IOU_TYPES)), None)  # fmt: skip
    if folder is None:
        raise ValueError(
            f"no results_bbox.json or results_segm.json in {', '.join(map(str, folders))}"
        )
    results = {t: read_json(folder / f"results_{t}.json", f"{t} results")
               for t in IOU_TYPES if (folder / f"results_{t}.json").is_file()}  # fmt: skip
    ann = args.ann or (Path(cfg["val_ann"]) if cfg.get("val_ann") else None)
    if ann is None or not ann.is_file():
        raise ValueError(f"--ann: ground truth {'not found: ' + str(ann) if ann else 'not named'}"
                         f" (no val_ann in {run / 'config.yaml'}); pass --ann GT.json")  # fmt: skip
    images = args.images or (Path(cfg["val_images"]) if cfg.get("val_images") else None)
    if images is not None and not images.is_dir():
        raise ValueError(f"--images: folder not found: {images}")
    return results, folder, ann, images


def _group(items: list[dict]) -> dict[int, list[dict]]:
    by_image = defaultdict(list)
    for x in items:
        by_image[x["image_id"]].append(x)
    return by_image


def _draw_pair(img: dict, gts, dets, segm_dets, names, index, images: Path):
    """Ground truth and predictions of one image drawn as two (3, H, W) uint8 tensors.

    ``gts``: its annotations (crowd left out); ``dets``: bbox results (already filtered by
    score); ``segm_dets``: the matching segm results (same order) or None."""
    from detnorm.analysis.visualize import draw_predictions, upscale, upscale_factor
    from detnorm.data.image_io import read_image

    h, w = img["height"], img["width"]
    array = np.ascontiguousarray(read_image(images / img["file_name"]))
    image = torch.from_numpy(array).permute(2, 0, 1)

    def instances(objs, masks_from):
        xyxy = [[x, y, x + bw, y + bh] for x, y, bw, bh in (o["bbox"] for o in objs)]
        out = {
            "boxes": torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([index[o["category_id"]] for o in objs], dtype=torch.int64),
            "scores": torch.tensor([float(o.get("score", 1.0)) for o in objs]),
        }
        if objs and masks_from is not None and len(masks_from) == len(objs):
            masks = [mask_util.decode(A.segmentation_rle(o, h, w)) for o in masks_from]
            out["masks"] = torch.from_numpy(np.stack(masks)).bool()
        return out

    gts = [a for a in gts if not a.get("iscrowd", 0)]
    factor = upscale_factor(h, w, 384)  # small images: readable labels
    drawn = []
    for objs, masks_from, scores in ((gts, gts, False), (dets, segm_dets, True)):
        big, inst = upscale(image, instances(objs, masks_from), factor)
        drawn.append(draw_predictions(big, inst, names, score_threshold=0.0, show_scores=scores))
    return drawn


def _worst_images(args, gt, results, main_type, out) -> list[tuple[dict, Path | None]]:
    rows = A.image_scores(gt, results[main_type], main_type, score_threshold=args.score_threshold)
    rows = [r for r in rows if r["f1"] < 1][: max(0, args.worst)]
    images = args.images_dir
    if images is None:
        return [(r, None) for r in rows]
    names = [c["name"] for c in gt["categories"]]
    index = {c["id"]: k for k, c in enumerate(gt["categories"], start=1)}
    imgs = {i["id"]: i for i in gt["images"]}
    gts, bbox = _group(gt["annotations"]), _group(results.get("bbox", results[main_type]))
    segm = _group(results["segm"]) if "segm" in results else None
    worst = []
    for rank, r in tqdm(list(enumerate(rows, start=1)), desc="worst images", leave=False,
                        disable=len(rows) < 20):  # fmt: skip
        i, thr = r["image_id"], args.score_threshold
        dets = [d for d in bbox[i] if d["score"] >= thr]
        masks = [d for d in segm[i] if d["score"] >= thr] if segm is not None else None
        pair = _draw_pair(imgs[i], gts[i], dets, masks, names, index, images)
        title = (f"image {i} ({r['file_name']}): F1 {r['f1']:.2f}, TP {r['tp']}, FP {r['fp']}, "
                 f"FN {r['fn']} ({main_type}, IoU 0.5, score >= {thr})")  # fmt: skip
        worst.append((r, R.write_worst_image(*pair, title, out / f"worst_{rank:02d}.png")))
    return worst


def analyze(args) -> Path:
    """Write every output (see the module docstring); returns the path of ``analysis.md``."""
    results, folder, ann, args.images_dir = _inputs(args)
    gt = load_gt_dataset(ann, tuple(results))
    for iou_type, dets in results.items():
        check_results(gt, dets, iou_type)
    out = args.output_dir or args.run_dir / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    evals = {t: A.run_cocoeval(gt, dets, t, backend=args.backend) for t, dets in results.items()}
    pr = R.write_pr({t: A.pr_curves(ev) for t, ev in evals.items()}, out)
    confusion = {}
    for iou_type, dets in results.items():
        m, labels = A.confusion_matrix(gt, dets, iou_type, score_threshold=args.score_threshold)
        confusion[iou_type] = (m, labels, *R.write_confusion(m, labels, iou_type, out))
    main_type = "segm" if "segm" in results else "bbox"
    worst = _worst_images(args, gt, results, main_type, out)
    ap = {t: A.per_category_ap(ev) for t, ev in evals.items()}
    return R.write_markdown(out, source=str(folder), ap=ap, pr=pr, confusion=confusion,
                            worst=worst, score_threshold=args.score_threshold)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``detnorm-analyze`` and ``tools/analyze.py``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        path = analyze(args)
    except (ValueError, OSError) as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(f"analysis: {path}")
    return 0
