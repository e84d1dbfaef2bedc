"""The small-scale reproduction study (issue 6): cells, their configs, and running them.

``configs/study/study.yaml`` names the seeds, the training images per cell, the families and
the pretrained backbones. Each family file (``configs/study/<family>.yaml``) lists cells:

``label``      name in tables and plot legends;
``x``          position on a line plot's x axis (the batch-size sweep's images per step);
``config``     detnorm config keys stacked over the family's ``base`` files;
``pretrain``   name of a backbone from ``study.yaml`` (``--pretrained`` its ``backbone.pth``);
``multiple``   training length in units of ``images_per_cell`` (3 for the 3x cells);
``optional``   run by ``run --all`` only with ``--with-optional``;
``same_as``    another cell whose runs this one reuses (one run, two tables).

A family file also has ``title``, ``base`` (config files under every cell), ``paper`` (the
published numbers, quoted), ``plot``, ``analysis`` (how the report compares the cells with the
paper) and ``discussion`` (text the report prints under the measured verdict).

A cell trains through ``tools/train.py`` (a subprocess, so DDP cells relaunch cleanly) or
``detnorm.cli.train.main`` in-process; nothing else trains. Its ``max_steps`` is ``images_per_cell *
multiple / (batch_size * devices)``, so every batch size sees the same images. Runs land in
``<root>/<family>/<cell>/seed<N>/`` with the cell's resolved ``cell.yaml``, ``train.log`` and
``study.json`` (wall time, machine); a run with ``metrics.json`` is done and skipped.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from detnorm.config import DEFAULTS, build_config, load_yaml, merge, write_yaml
from detnorm.io import write_json_atomic

__all__ = ["Cell", "Study", "cell_config", "ensure_pretrained", "load_study", "run_cell"]

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs" / "study"
_CELL_KEYS = {"label", "x", "config", "pretrain", "multiple", "optional", "same_as"}


@dataclass
class Cell:
    family: str
    name: str
    label: str
    config: dict = field(default_factory=dict)
    x: float | None = None
    pretrain: str | None = None
    multiple: int = 1
    optional: bool = False
    same_as: str | None = None

    @property
    def id(self) -> str:
        return f"{self.family}/{self.name}"


@dataclass
class Family:
    name: str
    title: str
    path: Path
    base: list[Path]
    cells: dict[str, Cell]
    paper: str = ""
    plot: dict = field(default_factory=dict)
    analysis: dict = field(default_factory=dict)
    discussion: str = ""


@dataclass
class Study:
    config_dir: Path
    seeds: list[int]
    images_per_cell: int
    families: dict[str, Family]
    pretrain: dict
    dataset: dict = field(default_factory=dict)
    notes: str = ""
    summary: str = ""

    def data_root(self, root: Path, data: str | None = None) -> str | None:
        """``data`` when given; else the study's generated dataset (``study.yaml``: ``dataset``,
        keywords of :func:`detnorm.data.synthetic.generate_dataset`) at ``<root>/data``,
        generated first when missing or made with other keywords; else None (embedded data)."""
        if data is not None or not self.dataset:
            return data
        from detnorm.data.synthetic import ensure_dataset

        return str(ensure_dataset(Path(root) / "data", **self.dataset))

    def cell(self, cell_id: str) -> Cell:
        family, _, name = cell_id.partition("/")
        if family not in self.families or name not in self.families[family].cells:
            raise ValueError(f"unknown cell {cell_id!r}; cells: {', '.join(self.cell_ids())}")
        return self.families[family].cells[name]

    def cell_ids(self) -> list[str]:
        return [c.id for f in self.families.values() for c in f.cells.values()]

    def resolve(self, cell: Cell) -> Cell:
        """The cell whose runs ``cell`` shows (follows ``same_as``)."""
        seen = {cell.id}
        while cell.same_as:
            cell = self.cell(cell.same_as)
            if cell.id in seen:
                raise ValueError(f"same_as forms a cycle at {cell.id}")
            seen.add(cell.id)
        return cell

    def runnable(self, *, with_optional: bool = False) -> list[Cell]:
        """Cells that own runs, in manifest order (``same_as`` cells are run by their target)."""
        return [c for f in self.families.values() for c in f.cells.values()
                if not c.same_as and (with_optional or not c.optional)]  # fmt: skip


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: must be a mapping")
    return data


def load_study(config_dir: str | os.PathLike = CONFIG_DIR, *, images: int | None = None) -> Study:
    """Read ``study.yaml`` and its family files; ``images`` overrides ``images_per_cell``."""
    config_dir = Path(config_dir)
    manifest = _read(config_dir / "study.yaml")
    families = {}
    for name in manifest.get("families", []):
        path = config_dir / f"{name}.yaml"
        data = _read(path)
        bases = data.get("base", [])
        cells = {}
        for cell_name, spec in (data.get("cells") or {}).items():
            unknown = set(spec) - _CELL_KEYS
            if unknown:
                raise ValueError(f"{path}: cell {cell_name}: unknown key {sorted(unknown)[0]!r}; "
                                 f"allowed: {', '.join(sorted(_CELL_KEYS))}")  # fmt: skip
            bad = set(spec.get("config") or {}) - set(DEFAULTS)
            if bad:
                raise ValueError(f"{path}: cell {cell_name}: unknown config key {sorted(bad)[0]!r}")
            cells[cell_name] = Cell(family=name, name=str(cell_name),
                                    label=str(spec.get("label", cell_name)),
                                    config=dict(spec.get("config") or {}), x=spec.get("x"),
                                    pretrain=spec.get("pretrain"),
                                    multiple=int(spec.get("multiple", 1)),
                                    optional=bool(spec.get("optional", False)),
                                    same_as=spec.get("same_as"))  # fmt: skip
        families[name] = Family(name=name, title=str(data.get("title", name)), path=path,
                                base=[path.parent / b for b in ([bases] if isinstance(bases, str) else bases)],
                                cells=cells, paper=str(data.get("paper", "")),
                                plot=dict(data.get("plot") or {}),
                                analysis=dict(data.get("analysis") or {}),
                                discussion=str(data.get("discussion", "")))  # fmt: skip
    study = Study(config_dir=config_dir, seeds=[int(s) for s in manifest.get("seeds", [0, 1, 2])],
                  images_per_cell=int(images or manifest.get("images_per_cell", 1280)),
                  families=families, pretrain=dict(manifest.get("pretrain") or {}),
                  dataset=dict(manifest.get("dataset") or {}),
                  notes=str(manifest.get("notes", "")),
                  summary=str(manifest.get("summary", "")))  # fmt: skip
    backbones = study.pretrain.get("backbones", {})
    for cell_id in study.cell_ids():
        cell = study.cell(cell_id)
        study.resolve(cell)
        if cell.pretrain and cell.pretrain not in backbones:
            raise ValueError(f"cell {cell_id}: pretrain {cell.pretrain!r} is not in study.yaml's "
                             f"pretrain.backbones ({', '.join(backbones)})")  # fmt: skip
    return study


def cell_config(study: Study, cell: Cell) -> dict:
    """The detnorm config of ``cell``: family base files, then the cell's keys, then max_steps."""
    cfg: dict = {}
    for base in study.families[cell.family].base:
        cfg = merge(cfg, load_yaml(base))
    cfg = merge(cfg, cell.config)
    per_step = (
        int(cfg.get("batch_size", 2)) * int(cfg.get("devices", 1)) * int(cfg.get("num_nodes", 1))
    )
    cfg["max_steps"] = max(1, study.images_per_cell * cell.multiple // per_step)
    cfg["name"] = cell.id.replace("/", "_")
    return cfg


def validate_cell(study: Study, cell: Cell, directory: Path) -> dict:
    """Write ``cell``'s config to ``directory/cell.yaml`` and resolve it with ``build_config``."""
    path = write_yaml(Path(directory) / "cell.yaml", cell_config(study, cell))
    return build_config([path])


def run_dir(root: Path, cell: Cell, seed: int) -> Path:
    return Path(root) / cell.family / cell.name / f"seed{seed}"


def _invoke(
    tool: str, argv: list[str], log: Path, in_process: bool, threads: int | None = None
) -> int:
    """``tools/<tool>`` in a subprocess (output to ``log``; ``threads``: its OMP/MKL thread
    count), or its ``main`` in-process."""
    if in_process:
        if tool == "train.py":
            from detnorm.cli.train import main
        else:
            from detnorm.engine.pretrain import main
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
    rc = _invoke("pretrain_backbone.py", argv, out / "pretrain.log", in_process, threads)
    if rc != 0 or not weights.is_file():
        raise RuntimeError(f"pretraining {name!r} failed (exit {rc}); see {out / 'pretrain.log'}")
    write_json_atomic(record, {"args": args})
    log(f"pretrained {name!r} in {time.perf_counter() - start:.0f} s: {weights}")
    return weights


def machine() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (None,) * 3
    return {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "platform": platform.platform(terse=True), "loadavg": [round(x, 2) for x in load if x is not None],
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}  # fmt: skip


def run_cell(study: Study, cell: Cell, seed: int, root: Path, *, data: str | None = None,
             extra_configs: tuple = (), in_process: bool = False, keep_checkpoints: bool = False,
             pretrain_args: str = "", threads: int | None = None, log=print) -> dict:  # fmt: skip
    """Train and evaluate one (cell, seed) unless its ``metrics.json`` exists; returns a record
    ``{"cell", "seed", "status": "done"|"skipped"|"failed", "seconds", ...}``."""
    cell = study.resolve(cell)
    out = run_dir(root, cell, seed)
    if (out / "metrics.json").is_file():
        return {"cell": cell.id, "seed": seed, "status": "skipped", "dir": str(out)}
    data = study.data_root(root, data)
    pretrained = None
    if cell.pretrain:
        pretrained = ensure_pretrained(study, cell.pretrain, root, extra_args=pretrain_args,
                                       in_process=in_process, threads=threads, log=log)  # fmt: skip
    if out.exists():  # an unfinished run: start it again from the beginning
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cfg = validate_cell(study, cell, out)
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
    rc = _invoke("train.py", argv, out / "train.log", in_process, threads)
    seconds = round(time.perf_counter() - start, 1)
    ok = rc == 0 and (out / "metrics.json").is_file()
    record = {"cell": cell.id, "seed": seed, "status": "done" if ok else "failed", "exit": rc,
              "seconds": seconds, "argv": ["tools/train.py", *argv], "machine": before,
              "loadavg_end": machine()["loadavg"], "dir": str(out)}  # fmt: skip
    write_json_atomic(out / "study.json", record, indent=1)
    if ok and not keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return record
