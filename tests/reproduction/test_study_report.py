"""The study's claims table, AP-against-steps curves and stages, on runs written by the tests
(the verdicts are checked against numbers computed here by hand)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from helpers.study_runs import claim_row as _claim  # noqa: E402
from helpers.study_runs import write_run as _run  # noqa: E402

from reproduction.claims import claims_table  # noqa: E402
from reproduction.cli import main  # noqa: E402
from reproduction.curves import family_curves, last_gain, plateau_text, read_curve  # noqa: E402
from reproduction.report import collect  # noqa: E402
from reproduction.runner import cell_config, finished, load_study, run_dir  # noqa: E402


def test_claims_verdicts_follow_the_numbers(tmp_path):
    study = load_study()
    root = tmp_path / "runs"
    for seed in (0, 1):
        _run(root, study, "batch_sweep/bn_b2", seed, 10.0 + seed)  # mean 10.5, std 0.71
        _run(root, study, "batch_sweep/frozen_bn_b2", seed, 16.0 + seed)  # mean 16.5
    cls = tmp_path / "classification.json"
    rows = [{"label": "BN", "batch": 32, "n": 3, "mean": 20.0, "std": 0.5},
            {"label": "BN", "batch": 4, "n": 3, "mean": 20.2, "std": 0.5},
            {"label": "BN", "batch": 2, "n": 3, "mean": 30.0, "std": 0.5},
            {"label": "GN", "batch": 32, "n": 3, "mean": 20.5, "std": 0.5},
            {"label": "GN", "batch": 2, "n": 3, "mean": 20.4, "std": 0.5}]  # fmt: skip
    cls.write_text(json.dumps({"rows": rows}))
    text = claims_table(study, collect(study, root), cls)
    bn_frozen = _claim(text, "Fine-tuning BN with batch statistics")
    assert bn_frozen[2] == "-6.0 ± 1.0 box AP" and bn_frozen[3] == "agrees"
    rises = _claim(text, "Classification: BN's error rises")
    assert rises[3] == "partly"  # +10 at 2, +0.2 at 4 (within the noise of 0.71)
    assert rises[4].startswith(
        "Judged at 64 epochs"
    )  # the reason is printed for a partial agreement
    assert _claim(text, "Classification: GN's error")[3] == "agrees"
    assert _claim(text, "Classification: GN within")[3] == "agrees"  # 0.5 apart
    assert _claim(text, "Group count")[2:4] == ["not yet run", "not yet run"]


@pytest.mark.parametrize(("ln", "verdict"), [(15.0, "agrees"), (12.5, "partly")])
def test_groups_verdict_needs_in_clearly_worst(tmp_path, ln, verdict):
    """IN must be below every other G by more than the noise (std 0.71 per cell: noise 1.0)."""
    study = load_study()
    root = tmp_path / "runs"
    means = {"groups/ln": ln, "groups/gn8": 18.0, "batch_sweep/gn_b2": 20.0, "groups/in": 12.0}
    for cell_id, mean in means.items():
        for seed in (0, 1):
            _run(root, study, cell_id, seed, mean - 0.5 + seed)
    row = _claim(claims_table(study, collect(study, root), tmp_path / "none.json"), "Group count")
    assert row[2] == f"G=1 {ln:.1f}, G=8 18.0, G=32 20.0, G=C 12.0 box AP"
    assert row[3] == verdict


def test_claims_table_is_in_the_report(tmp_path):
    study = load_study()
    root = tmp_path / "runs"
    for cell, box in (("bn_star_2fc", 10.0), ("bn_star_gn_head", 12.0),
                      ("gn_backbone_gn_head", 14.0), ("gn_all", 13.0)):  # fmt: skip
        for seed in (0, 1):
            own = study.resolve(study.cell(f"placement/{cell}")).id
            _run(root, study, own, seed, box + 0.2 * seed)
    out = tmp_path / "REPRODUCTION.md"
    assert main(["--no-restore", "--root", str(root), "report", "--output", str(out)]) == 0
    text = out.read_text()
    row = _claim(text, "Each added GN helps")
    # the last step (14.1 -> 13.1) is a drop beyond the noise: the order only partly holds
    assert row[2] == "10.1 → 12.1 → 14.1 → 13.1 box AP" and row[3] == "partly"
    assert text.index("## The paper's claims") < text.index("## 1. Classification")
    assert "## 4. Where the norm goes" in text


@pytest.mark.parametrize(("head", "verdict"), [(10.5, "agrees"), (9.9, "partly")])
def test_placement_verdict_needs_every_step_up(tmp_path, head, verdict):
    """A step down within its noise (0.28 here) still breaks "each added GN helps"."""
    study = load_study()
    root = tmp_path / "runs"
    for cell, box in (("bn_star_2fc", 10.0), ("bn_star_gn_head", head),
                      ("gn_backbone_gn_head", 14.0), ("gn_all", 15.0)):  # fmt: skip
        for seed in (0, 1):
            _run(root, study, study.resolve(study.cell(f"placement/{cell}")).id, seed,
                 box + 0.2 * seed)  # fmt: skip
    row = _claim(claims_table(study, collect(study, root), tmp_path / "none.json"), "Each added")
    assert row[3] == verdict


def test_placement_12x_probe_is_judged_once_its_four_cells_have_two_seeds(tmp_path):
    """1x: 10 → 12 → 14 → 15 (every step up, std 0.14 per cell). The 12x probe's cells add a
    second order, 30 → 29 → 40 → 41: with one seed each it is shown beside the 1x verdict; with
    two it is judged, and its step down (-1.0 against a noise of 0.2) makes it "partly"."""
    from reproduction.analysis import analyse

    study = load_study()
    root = tmp_path / "runs"
    for cell, box in (("bn_star_2fc", 10.0), ("bn_star_gn_head", 12.0),
                      ("gn_backbone_gn_head", 14.0), ("gn_all", 15.0)):  # fmt: skip
        for seed in (0, 1):
            _run(root, study, study.resolve(study.cell(f"placement/{cell}")).id, seed,
                 box + 0.2 * seed)  # fmt: skip

    def report():
        results = collect(study, root)
        row = _claim(claims_table(study, results, tmp_path / "none.json"), "Each added")
        return analyse(study, study.families["placement"], results), row

    text, row = report()
    assert "**Agrees with the paper's order**: first to last +5.0 box AP (higher)." in text
    assert ("No verdict on the paper's order at 12x until every cell has runs "
            "(placement/bn_star_2fc_12x, placement/bn_star_gn_head_12x, "
            "placement/gn_backbone_gn_head_12x, placement/gn_all_12x).") in text  # fmt: skip
    assert row[2:4] == ["10.1 → 12.1 → 14.1 → 15.1 box AP", "agrees"]
    long = {"placement/bn_star_2fc_12x": 30.0, "placement/bn_star_gn_head_12x": 29.0,
            "placement/gn_backbone_gn_head_12x": 40.0, "scratch/gn_pretrained_12x": 41.0}  # fmt: skip
    for cell_id, box in long.items():
        _run(root, study, cell_id, 0, box)
    text, row = report()
    assert row[2:4] == ["10.1 → 12.1 → 14.1 → 15.1 box AP; at 12x (1 seed): 30.0 → 29.0 → 40.0 "
                        "→ 41.0", "agrees"]  # fmt: skip
    assert "No verdict on the paper's order at 12x with one seed in a cell" in text
    assert "BN* backbone, 2fc, 12x → BN* backbone, GN 4conv1fc head, 12x: box AP -1.0" in text
    assert ("Box AP along BN* backbone, 2fc → BN* backbone, 2fc, 12x: 10.1 (n=2) → 30.0 (n=1); "
            "the last step adds +19.9") in text  # fmt: skip
    assert text.count("Box AP along") == 4
    _run(root, study, "placement/bn_star_gn_head_12x", 1, 29.2)
    text, row = report()
    assert row[2:4] == ["10.1 → 12.1 → 14.1 → 15.1 box AP; at 12x (1-2 seeds): 30.0 → 29.1 → 40.0 "
                        "→ 41.0", "agrees"]  # fmt: skip
    for cell_id, box in long.items():
        _run(root, study, cell_id, 1, box + 0.2)
    text, row = report()
    assert row[2].endswith("; at 12x (2 seeds): 30.1 → 29.1 → 40.1 → 41.1") and row[3] == "partly"
    assert "**Does not agree with the paper's order at 12x**: first to last +11.0 box AP" in text


def test_an_analysis_naming_an_unknown_cell_is_refused(tmp_path):
    import shutil

    from reproduction.manifest import CONFIG_DIR

    configs = tmp_path / "study"
    shutil.copytree(CONFIG_DIR, configs)
    path = configs / "placement.yaml"
    path.write_text(path.read_text().replace("expect: [bn_star_2fc,", "expect: [bn_star_2f,"))
    with pytest.raises(ValueError, match=r"placement\.yaml: analysis names cell 'bn_star_2f', "
                                         r"which is not among its cells \(bn_star_2fc, "):  # fmt: skip
        load_study(configs)


def test_curves_read_plot_and_measure_the_plateau(tmp_path):
    study = load_study()
    root = tmp_path / "runs"
    seed = study.curve["seeds"][0]
    _run(root, study, "batch_sweep/gn_b2", seed, 30.0,
         curve=[(250, 10.0, 9.0), (500, 25.0, 22.0), (750, 29.0, 27.0), (1000, 30.0, 28.0)])  # fmt: skip
    _run(root, study, "batch_sweep/bn_b2", seed, 8.0, curve=[(1000, 8.0, 7.0)])  # one point
    d = run_dir(root, study.cell("batch_sweep/gn_b2"), seed)
    assert read_curve(d)[0] == {"step": 250, "bbox": 10.0, "segm": 9.0}
    family = study.families["batch_sweep"]
    curves = family_curves(study, family, root)
    assert list(curves) == ["batch_sweep/gn_b2"]  # a single evaluation is not a curve
    assert last_gain(curves["batch_sweep/gn_b2"]) == pytest.approx(1.0)
    assert "GN at 2 +1.0 (750→1000)" in plateau_text(study, family, curves)
    # an evaluation a few steps before the final one is not the stretch measured
    near_end = [{"step": 62, "bbox": 5.0}, {"step": 186, "bbox": 26.0},
                {"step": 248, "bbox": 32.0}, {"step": 250, "bbox": 32.5}]  # fmt: skip
    assert last_gain(near_end) == pytest.approx(6.5)
    out = tmp_path / "REPRODUCTION.md"
    assert main(["--no-restore", "--root", str(root), "report", "--output", str(out)]) == 0
    png = tmp_path / "docs" / "study" / "batch_sweep_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](docs/study/batch_sweep_curves.png)" in out.read_text()
    # placement shows the same run through its same_as cell
    assert "placement/gn_all" in family_curves(study, study.families["placement"], root)


def test_a_run_interrupted_after_an_evaluation_is_not_finished(tmp_path):
    """A curve seed writes metrics.json after every evaluation: only the last step's counts."""
    study = load_study()
    root = tmp_path / "runs"
    cell = study.cell("batch_sweep/gn_b2")
    last = cell_config(study, cell, 0)["max_steps"]
    d = _run(root, study, "batch_sweep/gn_b2", 0, 12.0, curve=[(last // 4, 12.0, 11.0)])
    (d / "metrics.json").write_text(json.dumps({"bbox": {"AP": 12.0}, "segm": {"AP": 11.0},
                                                "step": last // 4}))  # fmt: skip
    assert finished(study, cell, 0, root) is None
    assert collect(study, root)["batch_sweep/gn_b2"].n == 0
    assert family_curves(study, study.families["batch_sweep"], root) == {}
    (d / "metrics.json").write_text(json.dumps({"bbox": {"AP": 30.0}, "segm": {"AP": 28.0},
                                                "step": last}))  # fmt: skip
    assert finished(study, cell, 0, root)["bbox"]["AP"] == 30.0
    assert collect(study, root)["batch_sweep/gn_b2"].values["bbox"] == [30.0]


def test_stage_runs_its_families_cells(tmp_path, capsys):
    study = load_study()
    stage = next(k for k, families in study.stages.items() if "groups" in families)
    groups = [c.id for c in study.stage_cells(stage)]
    assert "batch_sweep/gn_b2" in groups and "groups/gn32" not in groups  # same_as resolved
    with pytest.raises(ValueError, match="unknown stage 9"):
        study.stage_cells(9)
    assert main(["--no-restore", "--root", str(tmp_path), "run", "--stage", "9"]) == 2
    assert "unknown stage 9" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("scratch_6x", "verdict"), [(68.0, "agrees"), (58.0, "partly"), (20.0, "does not agree")]
)
def test_scratch_verdict_needs_the_gap_to_narrow_at_each_schedule(tmp_path, scratch_6x, verdict):
    """Gaps 25 (1x) and 12 (3x), then 2, 12.5 or 55 at 6x (std 0.71 per cell)."""
    study = load_study()
    root = tmp_path / "runs"
    means = {"batch_sweep/gn_b2": 45.0, "scratch/gn_scratch_1x": 20.0,
             "scratch/gn_pretrained_3x": 68.0, "scratch/gn_scratch_3x": 56.0,
             "scratch/gn_pretrained_6x": 70.5, "scratch/gn_scratch_6x": scratch_6x}  # fmt: skip
    for cell_id, mean in means.items():
        for seed in (0, 1):
            _run(root, study, cell_id, seed, mean - 0.5 + seed)
    text = claims_table(study, collect(study, root), tmp_path / "none.json")
    row = _claim(text, "From scratch closes")
    assert row[2].startswith("pretrained − scratch 25.0 → 12.0 → ")
    assert row[3] == verdict


@pytest.mark.parametrize(("pretrained_12x", "state"),
                         [(71.0, "a plateau"), (75.0, "still gaining"), (66.0, "lower")])  # fmt: skip
def test_schedule_series_says_whether_the_longest_run_still_gains(tmp_path, pretrained_12x, state):
    """The scratch family's series: pretrained 1x → 3x → 6x (std 0.71 each) → 12x (one seed,
    std 0); the 12x step adds 0.5, 4.5 or -4.5 box AP against the noise of ±0.7."""
    from reproduction.analysis import analyse

    study = load_study()
    root = tmp_path / "runs"
    means = {"batch_sweep/gn_b2": 45.0, "scratch/gn_pretrained_3x": 68.0,
             "scratch/gn_pretrained_6x": 70.5}  # fmt: skip
    for cell_id, mean in means.items():
        for seed in (0, 1):
            _run(root, study, cell_id, seed, mean - 0.5 + seed)
    _run(root, study, "scratch/gn_pretrained_12x", 0, pretrained_12x)
    text = analyse(study, study.families["scratch"], collect(study, root))
    line = next(s for s in text.split(". Box AP along ")[1:] if s.startswith("GN pretrained, 1x"))
    assert f"45.0 (n=2) → 68.0 (n=2) → 70.5 (n=2) → {pretrained_12x:.1f} (n=1)" in line
    assert f"the last step adds {pretrained_12x - 70.5:+.1f} (noise ±0.7: {state})" in line
    assert text.count("Box AP along") == 1  # no scratch runs: no scratch series


def test_scratch_claim_adds_the_12x_probe_once_it_has_runs(tmp_path):
    """Gaps 25 → 12 → 2 at 1x → 3x → 6x; a 12x pair (one seed each) adds a fourth, -1."""
    study = load_study()
    root = tmp_path / "runs"
    means = {"batch_sweep/gn_b2": 45.0, "scratch/gn_scratch_1x": 20.0,
             "scratch/gn_pretrained_3x": 68.0, "scratch/gn_scratch_3x": 56.0,
             "scratch/gn_pretrained_6x": 70.5, "scratch/gn_scratch_6x": 68.5}  # fmt: skip
    for cell_id, mean in means.items():
        for seed in (0, 1):
            _run(root, study, cell_id, seed, mean - 0.5 + seed)
    row = _claim(claims_table(study, collect(study, root), tmp_path / "none.json"), "From scratch")
    assert row[2] == "pretrained − scratch 25.0 → 12.0 → 2.0 box AP (1x → 3x → 6x)"
    _run(root, study, "scratch/gn_pretrained_12x", 0, 74.0)
    _run(root, study, "scratch/gn_scratch_12x", 0, 75.0)
    row = _claim(claims_table(study, collect(study, root), tmp_path / "none.json"), "From scratch")
    assert row[2] == "pretrained − scratch 25.0 → 12.0 → 2.0 → -1.0 box AP (1x → 3x → 6x → 12x)"
    assert row[3] == "agrees"
