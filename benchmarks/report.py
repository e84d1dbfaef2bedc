"""Render ``benchmarks/results.json`` (as a dict) into ``BENCHMARKS.md``."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

NOTES = Path(__file__).with_name("notes.md")
TIME_TO_ACCURACY = Path(__file__).with_name("time_to_accuracy.json")  # time_to_accuracy.py
BF16_AP = Path(__file__).with_name("bf16_ap.json")  # AP of fp32 and bf16 runs at equal steps


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
        f"{r['detections']} detections, 80 categories; `detnorm.evaluation.coco_eval.evaluate_coco` per "
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


def _bf16(r: dict, where: str) -> list[str]:
    load = r["machine"].get("load_avg_1m", float("nan"))
    lines = [
        "## 6. bf16 against fp32 on the CPU (training step)",
        "",
        f"Batch {r['batch_size']}; for each setting and norm, two copies of one network, one "
        "step each per round, interleaved: fp32, and the forward under "
        '`torch.autocast("cpu", torch.bfloat16)` (what `--precision bf16-mixed` does); '
        f"{r['rounds']} rounds after one warm-up round, medians. This CPU's bf16 support: "
        f"`{r['cpu_bf16'] or 'none'}`. {where}; 1-minute load average at start "
        f"{load:.1f}"
        + (
            ", so the absolute times are several times those of a quiet machine and the "
            "per-round ratios scatter."
            if load > 2
            else " (a quiet machine)."
        ),  # fmt: skip
        "",
        "| setting | norm | fp32 s/step | bf16 s/step | bf16 speedup | per-round speedups "
        "| box / mask RoIs per step (fp32, bf16) | mean loss (fp32, bf16) |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for setting, rows in r["settings"].items():
        kw = rows["model_kwargs"]
        label = (f"`{setting}`: R{rows['depth']}, scales {rows['scales']}, FPN "
                 f"{kw.get('fpn_channels', 256)}, box fc {kw.get('box_fc_dim', 1024)}")  # fmt: skip
        for norm, x in rows["norms"].items():
            a, b = x["fp32"], x["bf16"]
            lines.append(
                f"| {label} | {norm} | {a['median_s']:.3f} | {b['median_s']:.3f} | "
                f"**{x['speedup']:.2f}x** | {', '.join(f'{v:.2f}' for v in x['speedup_per_round'])} "
                f"| {a['box_rois_per_step']:.0f}/{a['mask_rois_per_step']:.0f}, "
                f"{b['box_rois_per_step']:.0f}/{b['mask_rois_per_step']:.0f} "
                f"| {a['mean_loss']:.3f}, {b['mean_loss']:.3f} |"
            )
    return lines + [""]


def _bf16_ap(r: dict) -> list[str]:
    lines = [
        "### AP at equal steps, fp32 against bf16 (3 seeds)",
        "",
        f"`{r['command']}`, on {r['machine']['label']}, {r['date']}. Minutes: the whole run "
        "(training and the evaluation at the end), from its config to its last evaluation.",
        "",
        "| precision | box AP (seeds 0, 1, 2) | mask AP | box AP mean ± std | mask AP mean ± std "
        "| minutes (mean) |",
        "|---|---|---|---:|---:|---:|",
    ]
    minutes = {}
    for prec in ("32-true", "bf16-mixed"):
        rows = [v for v in r["runs"].values() if v["precision"] == prec]
        box, mask = [x["bbox_AP"] for x in rows], [x["segm_AP"] for x in rows]
        minutes[prec] = statistics.mean(x["minutes"] for x in rows)
        lines.append(
            f"| {prec} | {', '.join(f'{v:.1f}' for v in box)} | "
            f"{', '.join(f'{v:.1f}' for v in mask)} | {statistics.mean(box):.1f} ± "
            f"{statistics.stdev(box):.1f} | {statistics.mean(mask):.1f} ± "
            f"{statistics.stdev(mask):.1f} | {minutes[prec]:.2f} |"
        )
    speedup = minutes["32-true"] / minutes["bf16-mixed"]
    lines += [
        "",
        f"Whole-run speedup of bf16: {speedup:.2f}x. The default stays fp32: the rule for "
        "switching it (bf16 at least 1.3x faster, AP within the seed spread) is met for AP but "
        "not clearly for speed on the CPU of these runs (AMD EPYC: AVX-512 BF16, no AMX); the "
        "main job at 2 threads measured 1.2-1.33x per step there (0.32-0.35 against 0.26 s, a "
        "trained model's batches of 4, one process). The training-step table above is "
        "re-measured whenever section 6 re-runs, on the machine its header names.",
        "",
    ]
    return lines


def _time_to_accuracy(r: dict) -> list[str]:
    lines = [
        "## 7. Time to accuracy: the main job's AP against wall time",
        "",
        f"`benchmarks/time_to_accuracy.py` on {r['date']}: {r['note']}. Each point is one of the "
        "run's COCO evaluations on the embedded validation split (200 held-out images); the "
        "clock starts when the run's config is written, after the dataset is generated.",
        "",
        "![time to accuracy](benchmarks/time_to_accuracy.png)",
        "",
        "| run | timed | points (step: box / mask AP, minutes) |",
        "|---|---|---|",
    ]
    for label, c in r["curves"].items():
        timed = "no (loaded machine)" if label in r.get("steps_only", []) else "yes"
        pts = "; ".join(
            f"{s}: {b:.1f} / {m:.1f}" + ("" if timed != "yes" else f", {t:.1f} min")
            for s, b, m, t in zip(c["step"], c["bbox"], c["segm"], c["minutes"], strict=True)
        )
        lines.append(f"| {label} | {timed} | {pts} |")
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
                ("loader", _loader), ("inference", _inference), ("bf16", _bf16))  # fmt: skip
    for key, fn in sections:
        if key in res:
            out += fn(res[key], where)
    if BF16_AP.is_file():
        out += _bf16_ap(json.loads(BF16_AP.read_text()))
    if TIME_TO_ACCURACY.is_file():
        out += _time_to_accuracy(json.loads(TIME_TO_ACCURACY.read_text()))
    out += [
        "## 8. GPU",
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
