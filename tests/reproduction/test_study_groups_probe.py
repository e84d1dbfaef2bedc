"""The group-count family's 12x plateau probe: its cells, its own ranking and verdict in the
family's analysis, its row of curves, and the 12x figures (then the 12x verdict) in the
group-count claim. The expected sentences hold numbers worked out here by hand from the runs
the tests write."""

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from helpers.study_runs import claim_row as _claim  # noqa: E402
from helpers.study_runs import write_run as _run  # noqa: E402

from reproduction.analysis import analyse  # noqa: E402
from reproduction.claims import claims_table  # noqa: E402
from reproduction.manifest import CONFIG_DIR  # noqa: E402
from reproduction.report import collect  # noqa: E402
from reproduction.runner import cell_config, load_study  # noqa: E402

ONE_EPOCH = {"ln": 30.0, "gn8": 36.0, "gn32": 44.0, "in": 20.0}  # +0 / +1 over two seeds


def _report(study, root, tmp_path):
    results = collect(study, root)
    text = claims_table(study, results, tmp_path / "none.json")
    return analyse(study, study.families["groups"], results), _claim(text, "Group count")


def test_probe_cells_fine_tune_each_grouping_for_12x_the_images():
    study = load_study()
    for name, norm, pretrain in (("ln_12x", "ln", "ln"), ("gn8_12x", "gn", "gn8"),
                                 ("in_12x", "in", "in")):  # fmt: skip
        cell = study.cell(f"groups/{name}")
        cfg = cell_config(study, cell, 0)
        assert (cfg["max_steps"], cfg["batch_size"], cfg["schedule"]) == (12000, 2, "3x")
        assert cfg["eval_period"] == 1000 and cfg["norm"] == norm and cell.pretrain == pretrain
    assert cell_config(study, study.cell("groups/gn8_12x"))["gn_groups"] == 8
    # G=32 at 12x is GN everywhere, pretrained, at 2 images: the scratch family's 12x run
    assert study.resolve(study.cell("groups/gn32_12x")).id == "scratch/gn_pretrained_12x"
    assert study.families["groups"].probe == {"ln_12x", "gn8_12x", "gn32_12x", "in_12x"}
    assert study.families["placement"].probe == set()  # 12x cells, but no analysis.long


def test_probe_is_ranked_then_judged_apart_from_the_one_epoch_cells(tmp_path):
    study = load_study()
    root = tmp_path / "runs"
    for name, box in ONE_EPOCH.items():
        cid = "batch_sweep/gn_b2" if name == "gn32" else f"groups/{name}"
        for seed in (0, 1):
            _run(root, study, cid, seed, box + seed)
    text, row = _report(study, root, tmp_path)
    assert "Measured order by box AP: G=32 44.5 > G=8 36.5 > G=1 (LN) 30.5 > G=C (IN) 20.5." in text
    assert "**Agrees with the paper**: best is G=32 (paper: G=32), worst is G=C (IN)" in text
    assert "at 12x" not in text and row[2:4] == ["G=1 30.5, G=8 36.5, G=32 44.5, G=C 20.5 box AP",
                                                 "agrees"]  # fmt: skip

    # the probe, one seed each: ranked, not judged; the claim shows it and keeps the 1x verdict
    probe = {"groups/ln_12x": 70.0, "groups/gn8_12x": 74.0, "scratch/gn_pretrained_12x": 73.0,
             "groups/in_12x": 71.0}  # fmt: skip
    for cid, box in probe.items():
        _run(root, study, cid, 0, box)
    text, row = _report(study, root, tmp_path)
    assert ("Measured order at 12x by box AP: G=8 12x 74.0 > G=32 12x 73.0 > G=C (IN) 12x 71.0 > "
            "G=1 (LN) 12x 70.0.") in text  # fmt: skip
    assert "No verdict at 12x until every cell has 2 seeds (groups/ln_12x, " in text
    assert row[2].endswith("; at 12x (1 seed): G=1 70.0, G=8 74.0, G=32 73.0, G=C 71.0")
    assert row[3] == "agrees"

    # two seeds each (+0 / +1: std 0.71, noise of a difference 1.0): judged at 12x, where LN is
    # last, so IN is not clearly worst and the best is still a GN with 8-32 groups: "partly"
    for cid, box in probe.items():
        _run(root, study, cid, 1, box + 1)
    text, row = _report(study, root, tmp_path)
    assert ("**Does not fully agree with the paper at 12x**: best is G=8 12x (paper: G=32 12x), "
            "worst is G=1 (LN) 12x (paper: G=C (IN) 12x).") in text  # fmt: skip
    assert "**Agrees with the paper**: best is G=32" in text  # the one-epoch verdict stays
    assert row[2].endswith("at 12x (2 seeds): G=1 70.5, G=8 74.5, G=32 73.5, G=C 71.5")
    assert row[3] == "partly"

    # IN below every other G beyond the noise at 12x: "yes"
    for seed in (0, 1):
        _run(root, study, "groups/in_12x", seed, 60.0 + seed)
    text, row = _report(study, root, tmp_path)
    assert "worst is G=C (IN) 12x (paper: G=C (IN) 12x)" in text and row[3] == "agrees"


def test_a_long_label_that_no_probe_cell_has_is_refused(tmp_path):
    configs = tmp_path / "study"
    shutil.copytree(CONFIG_DIR, configs)
    path = configs / "groups.yaml"
    path.write_text(path.read_text().replace('worst: "G=C (IN) 12x"', 'worst: "G=C 12x"'))
    with pytest.raises(ValueError, match=r"groups\.yaml: analysis\.long names label 'G=C 12x'"):
        load_study(configs)


def test_curves_plot_gives_the_groups_probe_its_own_row(tmp_path):
    from matplotlib.image import imread

    from reproduction.curves import family_curves, plot_curves

    study = load_study()
    root = tmp_path / "runs"
    fam = study.families["groups"]
    _run(root, study, "groups/ln", 0, 20.0, curve=[(500, 10.0, 9.0), (1000, 20.0, 18.0)])
    one = plot_curves(study, fam, family_curves(study, fam, root), tmp_path / "one.png")
    _run(root, study, "groups/in_12x", 0, 40.0, curve=[(1000, 30.0, 25.0), (12000, 40.0, 35.0)])
    two = plot_curves(study, fam, family_curves(study, fam, root), tmp_path / "two.png")
    assert imread(one).shape[0] == 440 and imread(two).shape[0] == 880
