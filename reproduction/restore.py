"""Rebuild the runs folder's records from the committed results, so that a fresh clone can
continue the study and write its report.

The run folders (``runs/study``) are not committed; ``docs/study/runs.json`` (one record per
finished run, with its AP curve when it evaluated during training) and
``docs/study/backbones.json`` (each pretrained backbone's metadata, without its weights) are.
:func:`restore` writes, for each committed run that the runs folder does not hold finished:

- ``<run>/metrics.json``: ``{"bbox": {"AP"}, "segm": {"AP"}, "step"}``;
- ``<run>/study.json``: the run's seconds, pause, machine and, for a fine-tuning run, the
  backbone it used (name, weights digest, top-1), with ``"restored"`` set;
- ``<run>/metrics.csv``: the curve, in the CSVLogger columns that ``curves.read_curve`` reads;

and ``<root>/pretrain/<name>/backbone.pth.json`` for each backbone it lacks. A restored run
counts as finished (``tools/study.py run`` skips it); a restored backbone has no weights, so a
cell that needs it pretrains it again, and the weights can differ in their last bits from one
CPU to another. The report then keeps the committed record of the earlier pretraining in
``backbones.json``, marked ``"replaced"`` (restore skips it), and names the runs that fine-tuned
each. A finished local run always wins over a committed one;
an unfinished one is replaced by it. Two study commands started at once on one runs folder
restore it one after the other: :func:`restore` holds an exclusive lock on
``<root>/.restore.lock`` (POSIX ``flock``) while it writes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import shutil
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no lock (one study command at a time)
    fcntl = None

from detnorm.io import atomic_write, read_json, write_json_atomic
from reproduction.curves import read_curve
from reproduction.runner import Study, finished, run_dir

__all__ = [
    "COMMITTED",
    "backbone_records",
    "restore",
    "root_lock",
    "run_records",
    "write_curve_csv",
]

COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "study"
COLUMNS = ("step", "val/bbox_AP", "val/segm_AP")


def write_curve_csv(path: Path, curve: list[dict]) -> None:
    """``curve`` (``[{"step", "bbox", "segm"}]``, steps counted from 1) as a CSVLogger file,
    which logs the evaluation after optimizer step N at N - 1; a NaN AP is left empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for p in curve:
        row = [int(p["step"]) - 1]
        for key in ("bbox", "segm"):
            v = p.get(key)
            row.append("" if v is None or math.isnan(float(v)) else repr(float(v)))
        w.writerow(row)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def _records(path: Path, what: str) -> list[dict]:
    if not path.is_file():
        return []
    data = read_json(path, f"the committed {what}")
    if not isinstance(data, list):
        raise ValueError(
            f"{path}: the committed {what} must be a JSON list, not {type(data).__name__}"
        )
    return data


@contextlib.contextmanager
def root_lock(root: Path):
    """Hold an exclusive lock on ``root/.restore.lock`` (blocks while another process holds it)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".restore.lock", "a") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_UN)


def restore(study: Study, root: Path, committed: Path = COMMITTED) -> int:
    """Write the committed runs and backbones that ``root`` lacks; returns how many runs."""
    root = Path(root)
    with root_lock(root):
        return _restore(study, root, committed)


def _restore(study: Study, root: Path, committed: Path) -> int:
    known = {c.id: c for c in study.runnable(with_optional=True)}
    n = 0
    for i, rec in enumerate(_records(committed / "runs.json", "runs")):
        cell = known.get(rec.get("cell"))
        if cell is None or rec.get("seed") not in study.seeds:
            continue  # a cell or seed that study.yaml no longer has
        if finished(study, cell, rec["seed"], root) is not None:
            continue
        try:
            metrics = {"bbox": {"AP": float(rec["box_ap"])}, "segm": {"AP": float(rec["mask_ap"])}}
            if rec.get("step") is not None:
                metrics["step"] = int(rec["step"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{committed / 'runs.json'}: record {i} ({rec.get('cell')} seed "
                             f"{rec.get('seed')}) lacks a number for {e}") from None  # fmt: skip
        d = run_dir(root, cell, rec["seed"])
        if d.exists():  # an unfinished local run of a committed one: the committed run wins
            shutil.rmtree(d)
        d.mkdir(parents=True)
        if rec.get("curve"):
            write_curve_csv(d / "metrics.csv", rec["curve"])
        keep = ("cell", "seed", "seconds", "paused_seconds", "machine", "curve_note", "backbone")
        study_rec = {k: rec[k] for k in keep if rec.get(k) is not None}
        write_json_atomic(
            d / "study.json", study_rec | {"status": "done", "restored": True}, indent=1
        )
        write_json_atomic(d / "metrics.json", metrics, indent=1)  # last: it marks the run finished
        n += 1
    for meta in _records(committed / "backbones.json", "backbones"):
        path = root / "pretrain" / str(meta.get("name")) / "backbone.pth.json"
        if meta.get("replaced"):  # an earlier pretraining: the report keeps it, runs do not
            continue
        if meta.get("name") in study.pretrain.get("backbones", {}) and not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, {k: v for k, v in meta.items() if k != "name"}, indent=1)
    return n


def run_records(study: Study, root: Path) -> list[dict]:
    """Every finished run: cell, seed, box / mask AP, steps, seconds, machine and, for a run
    that evaluated during training, its curve (the raw data behind the report, committed as
    ``docs/study/runs.json``; :mod:`reproduction.restore` reads it back)."""
    records = []
    for cell in study.runnable(with_optional=True):
        for seed in study.seeds:
            d = run_dir(root, cell, seed)
            m = finished(study, cell, seed, root)
            if m is None:
                continue
            rec = read_json(d / "study.json") if (d / "study.json").is_file() else {}
            records.append({"cell": cell.id, "seed": seed, "box_ap": m["bbox"]["AP"],
                            "mask_ap": m["segm"]["AP"], "step": m.get("step"),
                            "seconds": rec.get("seconds"), "paused_seconds": rec.get("paused_seconds"),
                            "machine": rec.get("machine")})  # fmt: skip
            if rec.get("backbone"):  # which pretraining it fine-tuned
                records[-1]["backbone"] = rec["backbone"]
            curve = [
                {k: (None if math.isnan(v) else v) for k, v in p.items()} for p in read_curve(d)
            ]
            if len(curve) >= 2:
                records[-1]["curve"] = curve
            if rec.get("curve_note"):  # how a restored curve was recovered
                records[-1]["curve_note"] = rec["curve_note"]
    return records


def backbone_records(study: Study, root: Path, committed: list[dict] | tuple = ()) -> list[dict]:
    """Each pretrained backbone's metadata (``backbone.pth.json``, no weights) with its name and,
    where ``study_pretrain.json`` records them, its weights' digest, machine and date. An entry of
    ``committed`` (the last ``backbones.json``) that the current pretraining of its name replaced
    is kept first, marked ``"replaced": true``: earlier runs fine-tuned it."""
    current = []
    for name in study.pretrain.get("backbones", {}):
        path = Path(root) / "pretrain" / name / "backbone.pth.json"
        if path.is_file():
            rec = {"name": name} | read_json(path)
            extra = path.with_name("study_pretrain.json")
            if extra.is_file():
                rec |= {
                    k: v for k, v in read_json(extra).items() if k in ("sha256", "machine", "date")
                }
            current.append(rec)

    def key(r: dict) -> tuple:
        return r.get("name"), r.get("sha256"), r.get("top1"), r.get("train_seconds")

    now = {key(r) for r in current}
    names = {r["name"] for r in current}
    kept = [r | {"replaced": True} for r in committed
            if r.get("name") in names and key(r) not in now]  # fmt: skip
    return kept + current
