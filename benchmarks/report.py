"""Render ``benchmarks/results.json`` (as a dict) into ``BENCHMARKS.md``."""

from __future__ import annotations

from pathlib import Path

NOTES = Path(__file__).with_name("notes.md")


def _ok(value: float, target: float, above: bool) -> str:
    met = value >= target if above else value <= target
    return "met" if met else "**not met**"


def _overhead(r: dict, where: str) -> list[str]:
    return [
        "## 1. Toolkit overhead: Lightning Trainer.fit against a plain PyTorch loop",
        "",
        f"{r['setting']}; {r['steps_per_round']} steps per arm per round, {r['rounds']} "
        f"interleaved rounds (after one warm-up round), per-step period from the end of step 1 "
        f"to the end of the last step. {where}.",
        "",
        "| arm | s/step (median) |",
        "|---|---:|",
        f"| plain PyTorch loop | {r['plain_s_per_step']:.3f} |",
        f"| detnorm Trainer.fit (production callbacks, CSV + TensorBoard loggers, progress "
        f"bar) | {r['lightning_s_per_step']:.3f} |",
        f"| **ratio** (target <= 1.03: {_ok(r['ratio'], 1.03, False)}) | **{r['ratio']:.3f}** |",
        "",
        f"Per-round ratios: {', '.join(f'{x:.3f}' for x in r['ratio_per_round'])}. The two arms "
        f"took the same steps: largest per-step loss difference {r['max_abs_loss_diff']:.1e}.",
        "",
    ]


def _norms(r: dict, where: str) -> list[str]:
    gn = r["norms"].get("gn", {}).get("time_ratio")
    lines = [
        "## 2. Cost of each norm (training step)",
        "",
        f"Setting `{r['setting']}`, batch {r['batch_size']}, 4conv1fc box head and 4-conv mask "
        f"head for every norm, same seed and images; {r['rounds']} interleaved rounds. {where}.",
        "Memory: peak RSS growth over two training steps in a fresh process per norm.",
        "",
        "| norm | s/step | time vs frozen_bn | peak memory growth (MiB) | memory vs frozen_bn "
        "| box / mask RoIs per step |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for norm, row in r["norms"].items():
        lines.append(
            f"| {norm} | {row['s_per_step']:.2f} | {row['time_ratio']:.3f}x | "
            f"{row['peak_delta_mib']:.0f} | {row['memory_ratio']:.2f}x | "
            f"{row['box_rois_per_step']:.0f} / {row['mask_rois_per_step']:.0f} |"
        )
    if gn is not None:
        lines += ["", f"Target gn <= 1.10x frozen_bn: {_ok(gn, 1.10, False)} ({gn:.3f}x; "
                  "detectron2 on V100: 0.309 / 0.261 = 1.18x, SyncBN 1.32x, see REFERENCE.md)."]  # fmt: skip
    return lines + [""]


def _eval(r: dict, where: str) -> list[str]:
    lines = [
        "## 3. COCO evaluation: pycocotools against faster-coco-eval",
        "",
        f"{r['images']} synthetic images, {r['gt_annotations']} ground-truth objects, "
        f"{r['detections']} detections, 80 categories; `detnorm.evaluation.evaluate_coco` per "
        f"backend, {r['rounds']} interleaved rounds. {where}.",
        "",
        "| iou type | pycocotools (s) | faster-coco-eval (s) | speed-up | max stat difference |",
        "|---|---:|---:|---:|---:|",
    ]
    tot_py = tot_fast = 0.0
    for t, row in r["iou_types"].items():
        tot_py += row["pycocotools_s"]
        tot_fast += row["faster_s"]
        lines.append(
            f"| {t} | {row['pycocotools_s']:.2f} | {row['faster_s']:.2f} | "
            f"{row['speedup']:.2f}x | {row['max_abs_stat_diff']:.1e} |"
        )
    both = tot_py / tot_fast
    lines.append(f"| bbox + segm (what an evaluation runs) | {tot_py:.2f} | {tot_fast:.2f} | "
                 f"{both:.2f}x | |")  # fmt: skip
    lines += ["", f"Target >= 3x: {_ok(both, 3.0, True)} for a full evaluation (bbox + segm); "
              "see the notes for segm alone. Reference on val2017: bbox 22.7 s -> 5.8 s, segm "
              "24.4 s -> 7.4 s (REFERENCE.md).", ""]  # fmt: skip
    return lines


def _loader(rows: list[dict], where: str) -> list[str]:
    lines = [
        "## 4. Data: loader images/s against model consumption",
        "",
        f"Loader: `DetectionDataModule` train loader (decode, masks, resize, flip, collate), "
        f"batch 2, measured alone. Model: plain training step (norm gn) on in-memory batches "
        f"of 2. {where}.",
        "",
        "| setting | model | loader workers | loader images/s | model images/s | ratio |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['setting']} (short side {row['scales']}, max {row['max_size']}) | "
            f"R{row['depth']}-FPN | {row['workers']} | {row['loader_images_per_s']:.1f} | "
            f"{row['model_images_per_s']:.2f} | {row['ratio']:.0f}x |"
        )
    worst = min(row["ratio"] for row in rows)
    return lines + ["", f"Target >= 3x: {_ok(worst, 3.0, True)}.", ""]


def _inference(r: dict, where: str) -> list[str]:
    h, w = r["image_hw"]
    lines = [
        "## 5. Inference latency per image",
        "",
        f"Setting `{r['setting']}`: {w}x{h} input resized to the test size, one image per call, "
        f"masks pasted back to the original size. {where}.",
        "",
        "| norm | ms/image | vs frozen_bn | detections/image |",
        "|---|---:|---:|---:|",
    ]
    for norm, row in r["norms"].items():
        lines.append(f"| {norm} | {row['s_per_image'] * 1000:.0f} | {row['ratio']:.3f}x | "
                     f"{row['detections_per_image']:.0f} |")  # fmt: skip
    return lines + [""]


def render(res: dict) -> str:
    m = res["machine"]
    where = f"Machine: {m['label']}, torch {m['torch']}, {m['torch_threads']} torch thread(s)"
    out = [
        "# detnorm benchmarks",
        "",
        f"Generated by `{res['command'].strip()}` ({res['mode']} mode) on {res['date']}.",
        *(f"Sections re-run with `{r['command']}` on {r['date']}." for r in res.get("reruns", [])),
        "",
        f"**Machine: {m['label']}** ({m['platform']}, Python {m['python']}, torch {m['torch']}, "
        f"{m['torch_threads']} torch thread(s), 1-minute load average at start "
        f"{m.get('load_avg_1m', float('nan')):.1f}). Other jobs share these cores, so absolute "
        "times are noisy and only the ratios, measured side by side in one process with the "
        "arms interleaved (A B A B ...) and taken as medians, should be read. Reproduce with "
        "`python benchmarks/run.py` (full, ~15-20 min here) or `--quick` (smoke, < 3 min); "
        "raw numbers are in `benchmarks/results.json`.",
        "",
    ]
    sections = (("overhead", _overhead), ("norms", _norms), ("eval", _eval),
                ("loader", _loader), ("inference", _inference))  # fmt: skip
    for key, fn in sections:
        if key in res:
            out += fn(res[key], where)
    out += [
        "## 6. GPU",
        "",
        "No GPU was available to this run, so there are no GPU figures (R50-FPN at 800x1333, 2 "
        "images per step, fp32 and AMP, per norm, against detectron2's 7.7 images/s per V100 "
        "and 3.4 / 5.6 / 5.5 GB). The scripts take `--device cuda` (`benchmarks/run.py --device "
        "cuda`), which times with `torch.cuda.synchronize()` and records CUDA peak memory; that "
        "path is untested.",
        "",
    ]
    if NOTES.is_file():
        out.append(NOTES.read_text().strip() + "\n")
    return "\n".join(out)
