"""The study's manifest: ``configs/study/study.yaml``, its family files, and their cells.

``configs/study/study.yaml`` names the seeds, the training images per cell, the families and
the pretrained backbones. Each family file (``configs/study/<family>.yaml``) lists cells:

``label``      name in tables and plot legends;
``x``          position on a line plot's x axis (the batch-size sweep's images per step);
``config``     detnorm config keys stacked over the family's ``base`` files;
``pretrain``   name of a backbone from ``study.yaml`` (``--pretrained`` its ``backbone.pth``);
``multiple``   training length in units of ``images_per_cell``: 3 for the 3x cells, a fraction
               for the equal-steps cells (0.25 at 2 images per step: the steps of an 8-image cell);
``optional``   run by ``run --all`` only with ``--with-optional``;
``same_as``    another cell whose runs this one reuses (one run, two tables);
``evals``      COCO evaluations of a curve seed's run, spread evenly (overrides ``study.yaml``'s
               ``curve: evals`` for this cell: a long schedule's AP against steps).

A family file also has ``title``, ``base`` (config files under every cell), ``paper`` (the
published numbers, quoted), ``plot``, ``analysis`` (how the report compares the cells with the
paper: ``kind`` batch, order, or gap; an order's ``expect`` lists cells worst to best, and
``expect_long`` a second such list judged on its own, the plateau probe's; ``long`` (batch:
the probe's line labels; order: its best and worst labels) marks the ``*_12x`` cells as a probe
judged apart, with their own row of curves; ``series`` lists
cells along a schedule; every cell it names must be the family's) and ``discussion`` (text the
report prints under the measured verdict).

The study is an application that runs from a clone of the repository: ``REPO`` is the folder
above this package (``reproduction/``), where ``configs/study/`` and ``tools/`` are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from detnorm.config import DEFAULTS

__all__ = ["CONFIG_DIR", "REPO", "Cell", "Family", "Study", "load_study"]

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs" / "study"
_CELL_KEYS = {"label", "x", "config", "pretrain", "multiple", "optional", "same_as", "evals"}


@dataclass
class Cell:
    family: str
    name: str
    label: str
    config: dict = field(default_factory=dict)
    x: float | None = None
    pretrain: str | None = None
    multiple: float = 1
    optional: bool = False
    same_as: str | None = None
    evals: int | None = None

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

    @property
    def probe(self) -> set[str]:
        """Names of the plateau probe's cells (``*_12x``), judged apart from the family's other
        cells, in a family whose ``analysis`` has a ``long`` block; empty otherwise."""
        return {n for n in self.cells if n.endswith("_12x")} if self.analysis.get("long") else set()


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
    curve: dict = field(default_factory=dict)  # {"seeds": [0], "evals": 4}: AP against steps
    stages: dict = field(default_factory=dict)  # {1: [family, ...], ...}: one session each
    claims: list = field(default_factory=list)  # rows of REPRODUCTION.md's claims table

    def curve_evals(self, seed: int, cell: Cell | None = None) -> int:
        """How many COCO evaluations a run of ``seed`` (of ``cell``) makes (1: only the final one)."""
        if seed not in self.curve.get("seeds", []):
            return 1
        return int(cell.evals if cell is not None and cell.evals else self.curve.get("evals", 1))

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

    def stage_cells(self, stage: int, *, with_optional: bool = False) -> list[Cell]:
        """The cells that own the runs of stage ``stage``'s families (``same_as`` resolved)."""
        if stage not in self.stages:
            raise ValueError(f"unknown stage {stage}; stages: {', '.join(map(str, self.stages))}")
        owners = {self.resolve(c).id: self.resolve(c) for f in self.stages[stage]
                  for c in self.families[f].cells.values() if with_optional or not c.optional}  # fmt: skip
        return list(owners.values())

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


def _analysis_cells(analysis: dict) -> set[str]:
    """Every cell name an ``analysis`` block refers to (lists, lists of lists, best / worst)."""
    names = set()
    for key, value in analysis.items():
        if key in ("best", "worst"):
            names.add(str(value))
        elif isinstance(value, list):
            for item in value:
                names.update(map(str, item) if isinstance(item, list) else [str(item)])
    return names


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
                                    multiple=float(spec.get("multiple", 1)),
                                    optional=bool(spec.get("optional", False)),
                                    same_as=spec.get("same_as"),
                                    evals=int(spec["evals"]) if spec.get("evals") else None)  # fmt: skip
        families[name] = Family(name=name, title=str(data.get("title", name)), path=path,
                                base=[path.parent / b for b in ([bases] if isinstance(bases, str) else bases)],
                                cells=cells, paper=str(data.get("paper", "")),
                                plot=dict(data.get("plot") or {}),
                                analysis=dict(data.get("analysis") or {}),
                                discussion=str(data.get("discussion", "")))  # fmt: skip
        named = _analysis_cells(families[name].analysis)
        if named - set(cells):
            raise ValueError(f"{path}: analysis names cell {sorted(named - set(cells))[0]!r}, "
                             f"which is not among its cells ({', '.join(cells)})")  # fmt: skip
        labels = {cells[n].label for n in families[name].probe}
        odd = [
            str(v) for v in (families[name].analysis.get("long") or {}).values() if v not in labels
        ]
        if odd:
            raise ValueError(f"{path}: analysis.long names label {odd[0]!r}, which is not the label "
                             f"of a *_12x cell ({', '.join(sorted(labels)) or 'none'})")  # fmt: skip
    study = Study(config_dir=config_dir, seeds=[int(s) for s in manifest.get("seeds", [0, 1, 2])],
                  images_per_cell=int(images or manifest.get("images_per_cell", 1280)),
                  families=families, pretrain=dict(manifest.get("pretrain") or {}),
                  dataset=dict(manifest.get("dataset") or {}),
                  notes=str(manifest.get("notes", "")),
                  summary=str(manifest.get("summary", "")),
                  curve=dict(manifest.get("curve") or {}),
                  stages={int(k): list(v) for k, v in (manifest.get("stages") or {}).items()},
                  claims=list(manifest.get("claims") or []))  # fmt: skip
    from reproduction.claims import MEASURES

    for row in study.claims:
        if not isinstance(row, dict) or row.get("id") not in MEASURES or "claim" not in row:
            raise ValueError(f"{config_dir / 'study.yaml'}: claims: each row needs `claim` and an "
                             f"`id` among {', '.join(MEASURES)}; got {row!r}")  # fmt: skip
    for stage, names in study.stages.items():
        unknown = [n for n in names if n not in families]
        if unknown:
            raise ValueError(f"{config_dir / 'study.yaml'}: stage {stage}: unknown family "
                             f"{unknown[0]!r}; families: {', '.join(families)}")  # fmt: skip
    backbones = study.pretrain.get("backbones", {})
    for cell_id in study.cell_ids():
        cell = study.cell(cell_id)
        study.resolve(cell)
        if cell.pretrain and cell.pretrain not in backbones:
            raise ValueError(f"cell {cell_id}: pretrain {cell.pretrain!r} is not in study.yaml's "
                             f"pretrain.backbones ({', '.join(backbones)})")  # fmt: skip
    return study
