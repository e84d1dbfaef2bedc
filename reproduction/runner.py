"""Running the study's cells: their configs, backbone pretraining, and one (cell, seed) run.

The cells come from :mod:`reproduction.manifest` (``configs/study/``; its docstring describes
the format). A cell trains through ``tools/train.py`` (a subprocess, so DDP cells relaunch
cleanly) or ``detnorm.cli.train.main`` in-process; nothing else trains. Its ``max_steps`` is
``images_per_cell * multiple / (batch_size * devices)``, so every batch size sees the same
images. Runs land in ``<root>/<family>/<cell>/seed<N>/`` with the cell's resolved ``cell.yaml``,
``train.log`` and ``study.json`` (wall time, machine). A run is finished when its
``metrics.json`` is the evaluation at its last step (a curve seed writes one after every
evaluation, so an interrupted run can have an earlier one); finished runs are skipped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from detnorm.config import build_config, load_yaml, merge, write_yaml
from detnorm.engine.precision import cpu_model
from detnorm.io import read_json, write_json_atomic
from reproduction.manifest import CONFIG_DIR, REPO, Cell, Family, Study, load_study

__all__ = ["CONFIG_DIR", "REPO", "Cell", "Family", "Study", "cell_config", "cpu_model", "ensure_pretrained", "finished", "processes", "run_seconds",
           "invoke", "load_study", "machine", "run_cell", "run_dir", "validate_cell", "weights_digest"]  # fmt: skip


def cell_config(study: Study, cell: Cell, seed: int | None = None) -> dict:
    """The detnorm config of ``cell``: family base files, then the cell's keys, then max_steps
    (and, for the seeds of ``study.yaml``'s ``curve``, evaluations spread over the run)."""
    cfg: dict = {}
    for base in study.families[cell.family].base:
        cfg = merge(cfg, load_yaml(base))
    cfg = merge(cfg, cell.config)
    per_step = int(cfg.get("batch_size", 2)) * processes(cfg)
    cfg["max_steps"] = max(1, round(study.images_per_cell * cell.multiple / per_step))
    evals = study.curve_evals(seed, cell) if seed is not None else 1
    if evals > 1:
        cfg["eval_period"] = -(-cfg["max_steps"] // evals)  # ceil: the last is the final one
    cfg["name"] = cell.id.replace("/", "_")
    return cfg


def validate_cell(study: Study, cell: Cell, directory: Path, seed: int | None = None) -> dict:
    """Write ``cell``'s config to ``directory/cell.yaml`` and resolve it with ``build_config``."""
    path = write_yaml(Path(directory) / "cell.yaml", cell_config(study, cell, seed))
    return build_config([path])


def run_dir(root: Path, cell: Cell, seed: int) -> Path:
    return Path(root) / cell.family / cell.name / f"seed{seed}"


def processes(cfg: dict) -> int:
    """How many training processes a run of ``cfg`` starts (``devices`` x ``num_nodes``): its
    wall seconds times this are the process-seconds it takes from the machine."""
    return int(cfg.get("devices", 1)) * int(cfg.get("num_nodes", 1))


def finished(study: Study, cell: Cell, seed: int, root: Path) -> dict | None:
    """The metrics of (``cell``, ``seed``) when that run finished (its ``metrics.json`` is from
    its last step), else None."""
    path = run_dir(root, cell, seed) / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text(encoding="utf-8"))
    last = cell_config(study, cell, seed)["max_steps"]
    return metrics if int(metrics.get("step", last)) >= last else None


def run_seconds(record: dict) -> float:
    """A run's training wall time: ``seconds`` less any ``paused_seconds`` (a run stopped with
    SIGSTOP while the machine did other work; the pause is added to ``study.json`` by hand)."""
    return float(record.get("seconds", math.nan)) - float(record.get("paused_seconds", 0.0))


def invoke(
    tool: str, argv: list[str], log: Path, in_process: bool, threads: int | None = None
) -> int:
    """``tools/<tool>`` in a subprocess (output to ``log``; ``threads``: its OMP/MKL thread
    count), or its ``main`` in-process."""
    if in_process:
        if tool == "train.py":
            from detnorm.cli.train import main
        else:
            from detnorm.cli.pretrain import main
        return main(argv)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log, "w", encoding="utf-8") as f:
        return subprocess.call([sys.executable, str(REPO / "tools" / tool), *argv], stdout=f,
                               stderr=subprocess.STDOUT, env=env, cwd=REPO)  # fmt: skip


def ensure_pretrained(study: Study, name: str, root: Path, *, extra_args: str = "",
                      in_process: bool = False, threads: int | None = None, log=print) -> Path:  # fmt: skip
    """``<root>/pretrain/<name>/backbone.pth``, pretraining it first when it is missing or was
    pretrained with other arguments (recorded in ``study_pretrain.json`` beside it)."""
    out = Path(root) / "pretrain" / name
    weights = out / "backbone.pth"
    args = [*map(str, study.pretrain.get("args", [])), *map(str, study.pretrain["backbones"][name]),
            *shlex.split(extra_args)]  # fmt: skip
    record = out / "study_pretrain.json"
    if weights.is_file():
        try:
            same = json.loads(record.read_text())["args"] == args
        except (OSError, ValueError, KeyError):
            same = False
        if same:
            return weights
        kept = out.with_name(f"{name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(out, kept)
        log(
            f"backbone {name!r} was pretrained with other arguments (kept in {kept}): pretraining again"
        )
    argv = [*args, "--resume", "--output-dir", str(out)]
    out.mkdir(parents=True, exist_ok=True)
    log(f"pretraining backbone {name!r}: tools/pretrain_backbone.py {shlex.join(argv)}")
    start = time.perf_counter()
    rc = invoke("pretrain_backbone.py", argv, out / "pretrain.log", in_process, threads)
    if rc != 0 or not weights.is_file():
        raise RuntimeError(f"pretraining {name!r} failed (exit {rc}); see {out / 'pretrain.log'}")
    write_json_atomic(record, {"args": args, "sha256": weights_digest(weights), "machine": machine(),
                               "date": time.strftime("%Y-%m-%d")})  # fmt: skip
    log(f"pretrained {name!r} in {time.perf_counter() - start:.0f} s: {weights}")
    return weights


def weights_digest(path: Path) -> str:
    """The first 16 hex digits of the SHA-256 of a weights file: which pretraining a run used."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def backbone_used(name: str, weights: Path) -> dict:
    """``{"name", "sha256", "top1"}`` of the backbone a run fine-tunes (pretraining differs in the
    last bits from one CPU to another, so the same arguments need not give the same weights)."""
    meta = Path(weights).with_name("backbone.pth.json")
    top1 = read_json(meta).get("top1") if meta.is_file() else None
    return {"name": name, "sha256": weights_digest(weights), "top1": top1}


def machine() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (None,) * 3
    return {"cpu_count": os.cpu_count(), "cpu_model": cpu_model(),
            "processor": platform.processor() or platform.machine(),
            "platform": platform.platform(terse=True), "loadavg": [round(x, 2) for x in load if x is not None],
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}  # fmt: skip


def run_cell(study: Study, cell: Cell, seed: int, root: Path, *, data: str | None = None,
             extra_configs: tuple = (), in_process: bool = False, keep_checkpoints: bool = False,
             pretrain_args: str = "", threads: int | None = None, log=print) -> dict:  # fmt: skip
    """Train and evaluate one (cell, seed) unless it has finished (:func:`finished`); returns a record
    ``{"cell", "seed", "status": "done"|"skipped"|"failed", "seconds", ...}``."""
    cell = study.resolve(cell)
    out = run_dir(root, cell, seed)
    if finished(study, cell, seed, root) is not None:
        return {"cell": cell.id, "seed": seed, "status": "skipped", "dir": str(out)}
    data = study.data_root(root, data)
    pretrained = None
    if cell.pretrain:
        pretrained = ensure_pretrained(study, cell.pretrain, root, extra_args=pretrain_args,
                                       in_process=in_process, threads=threads, log=log)  # fmt: skip
    if out.exists():  # an unfinished run: start it again from the beginning
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cfg = validate_cell(study, cell, out, seed)
    in_process = in_process and cfg["devices"] * cfg["num_nodes"] == 1  # DDP relaunches argv
    argv = ["--config", str(out / "cell.yaml")]
    for extra in extra_configs:
        argv += ["--config", str(extra)]
    argv += ["--seed", str(seed), "--output-dir", str(out)]
    if pretrained is not None:
        argv += ["--pretrained", str(pretrained)]
    if data is not None:
        argv += ["--data", str(data)]
    before = machine() | ({"omp_num_threads": str(threads)} if threads else {})
    start = time.perf_counter()
    rc = invoke("train.py", argv, out / "train.log", in_process, threads)
    seconds = round(time.perf_counter() - start, 1)
    ok = rc == 0 and finished(study, cell, seed, root) is not None
    record = {"cell": cell.id, "seed": seed, "status": "done" if ok else "failed", "exit": rc,
              "seconds": seconds, "argv": ["tools/train.py", *argv], "machine": before,
              "loadavg_end": machine()["loadavg"], "dir": str(out)}  # fmt: skip
    if pretrained is not None:
        record["backbone"] = backbone_used(cell.pretrain, pretrained)
    write_json_atomic(out / "study.json", record, indent=1)
    if ok and not keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return record
