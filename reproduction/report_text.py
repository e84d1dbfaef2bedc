"""The text of REPRODUCTION.md around the measured tables (see :mod:`reproduction.report`)."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from reproduction.runner import Study, cell_config, processes

NOT_RUN = "not yet run"

CAVEATS = """\
Why a small-scale result can differ from the paper's (reasons to weigh, not findings):
- the detection data are 2000 synthetic ~128 px images with 6 shape classes, each with its own
  hue, in clean scenes, not COCO's 118k images and 80 classes; the classification data are
  32 px scenes with 8 fill-pattern classes, not ImageNet;
- a narrow ResNet-18 FPN (64-wide FPN and heads) trained for one epoch of those images (3, 6
  and 12 for the long schedules), 250-12000 steps, against ResNet-50 at 800 px for 12-37 COCO epochs
  and 90k-270k steps; the AP-against-steps plots show how flat each run is at its end;
- one process: the images per step are also BN's batch, where the paper's batch per GPU is an
  eighth of its step;
- the "pretrained" backbones learned a 6-class shape task for about 20 CPU-minutes (top-1 under
  "Plan and cost"), not ImageNet;
- GN's 32 groups on 64-channel FPN and head layers leave 2 channels per group, close to IN there;
- AP differences smaller than the seed-to-seed spread (the ± values) are noise.
"""


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start).replace(os.sep, "/")


def _shared(mach: dict) -> str:
    """A note when the 1-minute load average at the start exceeded the CPU count."""
    load, cpus = mach.get("loadavg") or [0], mach.get("cpu_count") or 0
    return ", shared: other processes were running" if cpus and load[0] > cpus else ""


def _dataset_text(d: dict) -> str:
    objects = d.get("objects", (4, 14))
    return (f"{d.get('num_train', 400)} train / {d.get('num_val', 100)} val images of "
            f"{d.get('image_size', 256)} px, {objects[0]}-{objects[1]} objects of "
            f"{d.get('min_object', 6)} px and up, {'cluttered' if d.get('clutter', True) else 'clean'} "
            f"scenes, generator seed {d.get('seed', 0)}")  # fmt: skip


def _model_text(cfg: dict) -> str:
    mk = cfg.get("model_kwargs", {})
    return (f"ResNet-{cfg['depth']} FPN Mask R-CNN, FPN and RoI-head convolutions "
            f"{mk.get('fpn_channels', 256)} wide, {mk.get('box_fc_dim', 1024)}-d box fcs, anchors "
            f"{mk.get('anchor_sizes', [32, 64, 128, 256, 512])} px, train short side "
            f"{cfg['train_scales']}, test {cfg['test_size']}")  # fmt: skip


def _backbones(study: Study, backbones: list[dict], runs: list[dict]) -> list[str]:
    """One line per pretrained backbone: its norm and top-1 on its own validation split; where a
    name was pretrained more than once (the last bits of pretraining differ between CPUs), which
    runs fine-tuned which pretraining."""
    names = [b.get("name") for b in backbones]
    lines = []
    for meta in backbones:
        name = meta.get("name")
        line = (f"- Pretrained `{name}` backbone ({meta.get('norm')}, {meta.get('steps')} steps, "
                f"{meta.get('train_seconds', 0):.0f} s"
                f"{', ' + meta['machine'].get('cpu_model', '?') if meta.get('machine') else ''}"
                f"{', ' + meta['date'] if meta.get('date') else ''}"
                f"{', weights ' + meta['sha256'][:8] if meta.get('sha256') else ''}): top-1 "
                f"{meta.get('top1', float('nan')):.1f} % (chance {100 / len(meta.get('classes', [0] * 6)):.1f} %) "
                f"on the val split of {meta.get('data')}.")  # fmt: skip
        if names.count(name) > 1:
            cells = {c.id for c in study.runnable(with_optional=True) if c.pretrain == name}
            if meta.get("sha256"):
                used = [
                    r for r in runs if (r.get("backbone") or {}).get("sha256") == meta["sha256"]
                ]
            else:
                used = [r for r in runs if r.get("cell") in cells and not r.get("backbone")]
            which = ", ".join(f"{r['cell']} seed {r['seed']}" for r in used[:4])
            line += (f" Fine-tuned by {len(used)} run{'s' if len(used) != 1 else ''}"
                     f"{': ' + which + (', …' if len(used) > 4 else '') if used else ''}"
                     f"{' (every run of its cells without a backbone record)' if not meta.get('sha256') else ''}.")  # fmt: skip
        lines.append(line)
    return lines


def _machines(machines: list[dict]) -> str:
    """The first run's machine; with runs on other CPUs too, each CPU model and its run count."""
    m = machines[0] if machines else {}

    def cpu(m: dict) -> str:
        return m.get("cpu_model") or m.get("processor", "?")

    text = f"{m.get('cpu_count', '?')} CPUs, {cpu(m)}, load {m.get('loadavg', '?')}{_shared(m)}"
    models = list(dict.fromkeys(cpu(x) for x in machines))
    if len(models) > 1:
        text += " (runs per CPU: " + "; ".join(
            f"{c} {sum(cpu(x) == c for x in machines)}" for c in models) + ")"  # fmt: skip
    return text


def _embedded() -> dict:
    from detnorm.data.synthetic import DEFAULTS

    return DEFAULTS


def _plan(study: Study, root: Path, results, backbones=(), run_recs=()) -> str:
    runnable = study.runnable()
    runs = len(runnable) * len(study.seeds)
    cfg = cell_config(study, runnable[0])
    n_train = (
        study.dataset.get("num_train", 400) if study.dataset else int(_embedded()["num_train"])
    )
    data = (f"the study's generated dataset ({_dataset_text(study.dataset)})" if study.dataset
            else f"the embedded dataset ({_dataset_text(_embedded())}, each class with its own hue)")  # fmt: skip
    curve = study.curve
    stages = "; ".join(f"stage {k}: {', '.join(v)}" for k, v in study.stages.items())
    lines = [
        "## Plan and cost",
        "",
        f"- Cells: {len(runnable)} that own runs (plus {len(study.cell_ids()) - len(study.runnable(with_optional=True))} "
        f"that reuse another cell's runs, and {len(study.runnable(with_optional=True)) - len(runnable)} optional), "
        f"seeds {', '.join(map(str, study.seeds))}: {runs} training runs."
        + (
            f" Stages, one session of this machine each (`tools/study.py run --stage N`): {stages}."
            if stages
            else ""
        ),
        f"- Data: {data}.",
        f"- Every 1x cell sees {study.images_per_cell} training images "
        f"({study.images_per_cell / n_train:.2f} epochs of the {n_train} training images); "
        f"steps = images / images per step, LR = {cfg.get('base_lr', 0.02):g} × images per step / "
        "16. The equal-steps cells take the steps of an 8-image cell; 3x and 6x cells see three "
        "and six times the images with the 3x schedule's decay points.",
        *(
            [
                f"- Seed{'s' if len(curve['seeds']) > 1 else ''} {', '.join(map(str, curve['seeds']))} of every cell "
                f"evaluate{'s' if len(curve['seeds']) == 1 else ''} {curve.get('evals', 1)} times during training (AP against steps); "
                "the other seeds once, at the end."
            ]
            if curve.get("seeds")
            else []
        ),
        f"- Model: {_model_text(cfg)}.",
        "- Configs: `configs/study/` (`study.yaml`, one file per experiment, `base.yaml`).",
        "- Whole study: `.venv/bin/python tools/study.py run --all --jobs 2 && .venv/bin/python "
        "tools/study.py report` (resumable: finished runs are skipped; `--jobs 2` runs two cells at "
        "a time with one thread each; on a machine shared with other jobs, set `--threads 1` or "
        "`OMP_NUM_THREADS=1`, since oversubscribed threads slow training several-fold). One cell: "
        "`.venv/bin/python tools/study.py run --cell batch_sweep/gn_b2 --seed 0`. "
        "Time per cell from a timing probe: `tools/study.py estimate --jobs 2`.",
        *_backbones(study, list(backbones), list(run_recs)),
        "",
    ]
    if study.notes.strip():
        lines += ["**How the committed runs were made.** " + " ".join(study.notes.split()), ""]
    timed = [(cid, r) for cid, r in results.items() if r.seconds and not study.cell(cid).same_as]
    if timed:
        lines += ["Measured wall time of finished runs (includes start-up and the final COCO evaluation):", "",
                  "| cell | runs | s/run | machine (CPUs, load average at start) |", "|---|---:|---:|---|"]  # fmt: skip
        procs = {cid: processes(cell_config(study, study.cell(cid))) for cid, _ in timed}
        for cid, r in timed:
            n = procs[cid]
            lines.append(
                f"| {cid}{f' ({n} processes)' if n > 1 else ''} | {len(r.seconds)} | {statistics.fmean(r.seconds):.0f} | {_machines(r.machines)} |"
            )
        total = sum(sum(r.seconds) * procs[cid] for cid, r in timed)
        pre = sum(json.loads(p.read_text()).get("train_seconds", 0)
                  for p in Path(root).glob("pretrain/*/backbone.pth.json") if ".replaced-" not in p.parent.name)  # fmt: skip
        lines += ["", f"Total: {sum(len(r.seconds) for _, r in timed)} runs took {total / 60:.0f} "
                  f"process-minutes (a DDP run's wall time once per process), plus {pre / 60:.0f} "
                  "of pretraining; two processes of one "
                  f"thread each at a time make that about {(total + pre) / 120:.0f} minutes of wall "
                  "time on 2 cores."]  # fmt: skip
        lines.append("")
    est = root / "estimate.json"
    if est.is_file():
        e = json.loads(est.read_text())
        r, m = e["rates"], e["rates"].get("machine", {})
        stages = "; ".join(f"stage {k} {v / 3600:.1f} h" for k, v in e.get("stages", {}).items())
        lines += [
            f"Estimate (`tools/study.py estimate --jobs {e.get('jobs', 1)}`, {r.get('date', '?')}, rates from "
            f"{r.get('source', '?')}, {m.get('cpu_count')} CPUs): {r['seconds_per_image']:.3f} s per training "
            f"image, {r['overhead_seconds']:.0f} s per run (start-up and the final evaluation), "
            f"{r.get('extra_eval_seconds', 0):.0f} s per extra evaluation, "
            f"{sum(v for v in e['pretrain_seconds'].values() if v) / 60:.0f} process-minutes of pretraining. "
            f"Whole detection study: {e['total_seconds'] / 3600:.1f} h of wall time at "
            f"{e.get('jobs', 1)} runs at a time ({stages}).",
            "",
        ]  # fmt: skip
    elif not timed:
        lines += ["Estimate: not yet made (`tools/study.py estimate --jobs 2`).", ""]
    return "\n".join(lines)


CLASSIFICATION = Path(__file__).resolve().parents[1] / "docs" / "study" / "classification.md"
CLASSIFICATION_START = "<!-- classification:start -->"
CLASSIFICATION_END = "<!-- classification:end -->"


def classification_section(source: Path = CLASSIFICATION) -> str:
    """The classification batch sweep's summary (``tools/study.py classification summarize``
    writes it) as a section of REPRODUCTION.md, between markers; empty before it has run."""
    if not source.is_file():
        return ""
    lines = source.read_text(encoding="utf-8").strip().splitlines()
    title = lines[0].lstrip("# ").strip()
    body = [("#" + line) if line.startswith("## ") else line for line in lines[1:]]
    body = [line.replace("](classification", "](docs/study/classification") for line in body]
    return "\n".join([CLASSIFICATION_START, f"## 1. Classification: {title}", *body,
                      CLASSIFICATION_END, ""])  # fmt: skip


def _data_name(study: Study) -> str:
    return "the study's generated data" if study.dataset else "the embedded data"


def render(
    study: Study, root: Path, output: Path, results, sections, *, backbones=(), runs=()
) -> str:
    from reproduction.claims import claims_table

    claims = claims_table(study, results, CLASSIFICATION.with_suffix(".json"))
    done = sum(r.n for cid, r in results.items() if not study.cell(cid).same_as)
    head = [
        "# Reproducing the GN paper at small scale",
        "",
        "Generated by `tools/study.py report` from the run directories under "
        f"`{root}`; every small-scale number below is measured, and a cell without runs says "
        f'"{NOT_RUN}". The paper\'s numbers are quoted from Wu & He, *Group Normalization* '
        "(ECCV 2018), Detectron's published models and the detectron2 model zoo "
        "(COCO val2017; ImageNet val for the classification tables).",
        "",
        f"Runs finished: {done}." if done else "**Not yet run**: no run of the study has finished.",
        "",
        *(["## The paper's claims", "", claims, ""] if claims else []),
        *(
            ["**Summary.** " + " ".join(study.summary.split()), ""]
            if done and study.summary.strip()
            else []
        ),
        classification_section(),
        _plan(study, root, results, backbones, runs),
    ]
    body = []
    first = 2 if classification_section() else 1
    for i, (family, table, pngs, analysis) in enumerate(sections, first):
        body += [f"## {i}. {family.title}", "", "**Paper.**", "", family.paper.strip(), "",
                 f"**Small scale (this toolkit, {_data_name(study)}, box / mask AP mean ± std over seeds).**",
                 "", table, ""]  # fmt: skip
        for png in pngs:
            body += [f"![{family.title}]({_rel(png, output.parent)})", ""]
        body += [f"**Agreement.** {analysis}", ""]
        first = next(iter(family.cells.values()))
        cfg = cell_config(study, study.resolve(first))
        body += [f"Setting: {_model_text(cfg)}, schedule shape {cfg['schedule']} compressed to "
                 "the steps shown.", ""]  # fmt: skip
        if family.discussion:
            body += ["**Discussion.** " + " ".join(family.discussion.split()), ""]
    return "\n".join(head + body + [CAVEATS])
