"""Run folders as ``tools/study.py run`` leaves them, written by the study tests."""

import csv
import json

from reproduction.runner import run_dir


def write_run(root, study, cell_id, seed, box, mask=None, seconds=100.0, threads="1", curve=None):
    d = run_dir(root, study.cell(cell_id), seed)
    d.mkdir(parents=True, exist_ok=True)
    metrics = {"bbox": {"AP": box}, "segm": {"AP": box if mask is None else mask}}
    (d / "metrics.json").write_text(json.dumps(metrics))
    record = {"status": "done", "seconds": seconds, "machine": {"omp_num_threads": threads}}
    (d / "study.json").write_text(json.dumps(record))
    if curve:
        with open(d / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, ["epoch", "step", "train/loss", "val/bbox_AP", "val/segm_AP"])
            w.writeheader()
            for step, b, m in curve:  # a training row, then the evaluation logged at step - 1
                w.writerow({"epoch": 0, "step": step - 1, "train/loss": 1.0})
                w.writerow({"epoch": 0, "step": step - 1, "val/bbox_AP": b, "val/segm_AP": m})
    return d


def claim_row(text: str, start: str) -> list[str]:
    """The cells of the claims-table row whose claim starts with ``start``."""
    row = next(line for line in text.splitlines() if line.startswith(f"| {start}"))
    return [c.strip() for c in row.split("|")[1:-1]]
