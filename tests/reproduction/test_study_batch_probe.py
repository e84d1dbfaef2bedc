"""The batch sweep's 12x plateau probe: its cells, its own verdict sentences in the family's
analysis, and the 12x figures (then the 12x verdict) in the two detection batch claims. The
expected sentences hold numbers computed here by hand from the runs the tests write."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from helpers.study_runs import claim_row as _claim  # noqa: E402
from helpers.study_runs import write_run as _run  # noqa: E402

from reproduction.analysis import analyse  # noqa: E402
from reproduction.claims import claims_table  # noqa: E402
from reproduction.report import collect  # noqa: E402
from reproduction.runner import cell_config, load_study  # noqa: E402

# one-epoch sweep, two seeds a cell (+0 and +1: std 0.71, noise of a difference 1.0)
ONE_EPOCH = {"bn_b8": 20.0, "bn_b2": 10.0, "gn_b8": 30.0, "gn_b2": 30.0, "frozen_bn_b8": 5.0,
             "frozen_bn_b2": 25.0}  # fmt: skip


def _report(study, root, tmp_path):
    results = collect(study, root)
    text = claims_table(study, results, tmp_path / "none.json")
    rows = (_claim(text, "Detection, equal images"), _claim(text, "Fine-tuning BN with batch"))
    return analyse(study, study.families["batch_sweep"], results), rows


def test_probe_cells_train_12x_the_images_at_the_3x_schedule():
    study = load_study()
    for name, steps in (("bn_b2_12x", 12000), ("bn_b4_12x", 6000), ("gn_b8_12x", 3000)):
        cfg = cell_config(study, study.cell(f"batch_sweep/{name}"), 0)
        assert (cfg["max_steps"], cfg["schedule"], cfg["eval_period"]) == (steps, "3x", steps // 12)
    # at 2 images per step GN and BN* are the scratch and placement families' 12x cells
    assert study.resolve(study.cell("batch_sweep/gn_b2_12x")).id == "scratch/gn_pretrained_12x"
    frozen = study.resolve(study.cell("batch_sweep/frozen_bn_b2_12x"))
    assert frozen.id == "placement/bn_star_2fc_12x"
    assert cell_config(study, frozen)["norm"] == "frozen_bn"
    assert cell_config(study, study.cell("batch_sweep/bn_b2_12x"))["norm"] == "bn"


def test_equal_steps_probe_takes_3000_steps_and_shares_the_8_image_runs():
    study = load_study()
    for norm in ("bn", "gn", "frozen_bn"):
        for b in (8, 4, 2):
            cell = study.resolve(study.cell(f"batch_steps/{norm}_b{b}_12x"))
            cfg = cell_config(study, cell)
            assert (cfg["max_steps"], cfg["batch_size"], cfg["schedule"]) == (3000, b, "3x")
            assert cfg["norm"] == norm and cell.pretrain == ("gn" if norm == "gn" else "bn")
        assert (
            study.resolve(study.cell(f"batch_steps/{norm}_b8_12x")).id
            == f"batch_sweep/{norm}_b8_12x"
        )
    # GN at 2 images for 3000 steps is the scratch family's pretrained 3x cell
    assert study.resolve(study.cell("batch_steps/gn_b2_12x")).id == "scratch/gn_pretrained_3x"


def test_probe_is_shown_then_judged_apart_from_the_one_epoch_sweep(tmp_path):
    study = load_study()
    root = tmp_path / "runs"
    for name, box in ONE_EPOCH.items():
        for seed in (0, 1):
            _run(root, study, f"batch_sweep/{name}", seed, box + seed)
    text, (images, frozen) = _report(study, root, tmp_path)
    # one epoch: BN 20.5 -> 10.5 (-10 beyond 1.0), GN 30.5 -> 30.5: agrees; BN - BN* at 2: -15
    assert images[2:4] == ["BN 20.5 → 10.5, GN 30.5 → 30.5 box AP (8 → 2 images per step)",
                           "agrees"]  # fmt: skip
    assert frozen[2:4] == ["-15.0 ± 1.0 box AP", "agrees"]
    assert "At 12x" not in text and "BN 12x" not in text
    assert "**Agrees with the paper**: from the largest to the smallest batch, BN's box AP " \
           "changes by -10.0 and GN's by +0.0." in text  # fmt: skip

    # the probe at 2 images per step, one seed each: shown, the verdicts stay the one-epoch ones
    _run(root, study, "batch_sweep/bn_b2_12x", 0, 60.0)
    _run(root, study, "placement/bn_star_2fc_12x", 0, 50.0)
    text, (images, frozen) = _report(study, root, tmp_path)
    assert frozen[2:4] == ["-15.0 ± 1.0 box AP; at 12x (1 seed): BN 60.0 against BN* 50.0 "
                           "(+10.0 ± 0.0)", "agrees"]  # fmt: skip
    assert images[2] == "BN 20.5 → 10.5, GN 30.5 → 30.5 box AP (8 → 2 images per step)"
    assert "At 12x: BN 12x: fewer than two batch sizes measured." in text
    assert "BN 12x − BN* 12x at the same batch: +10.0 ± 0.0 at 2 box AP." in text

    # two seeds of both: judged at 12x, where BN is above BN* beyond the noise
    _run(root, study, "batch_sweep/bn_b2_12x", 1, 62.0)  # 61.0 ± 1.41
    _run(root, study, "placement/bn_star_2fc_12x", 1, 50.0)  # 50.0 ± 0
    _, (_, frozen) = _report(study, root, tmp_path)
    assert frozen[2].endswith("at 12x (2 seeds): BN 61.0 against BN* 50.0 (+11.0 ± 1.4)")
    assert frozen[3] == "does not agree"

    # the whole 2x2 at 12x, one seed at 8 images and of GN at 2: compared, not judged
    for name, box in (("batch_sweep/bn_b8_12x", 70.0), ("batch_sweep/gn_b8_12x", 75.0),
                      ("scratch/gn_pretrained_12x", 76.0)):  # fmt: skip
        _run(root, study, name, 0, box)
    text, _ = _report(study, root, tmp_path)
    assert "At 12x: BN 12x: box AP 70.0 at 8 images per step, 61.0 at 2 (change -9.0, " in text
    assert ("No verdict until every cell it compares has 2 seeds (batch_sweep/bn_b8_12x, "
            "batch_sweep/gn_b8_12x, batch_sweep/gn_b2_12x).") in text  # fmt: skip
    assert text.count("**Agrees with the paper**") == 1  # the one-epoch sweep's

    # the whole 2x2 at 12x, two seeds: BN 70 -> 61 (-9), GN 75 -> 76 (+1): judged there
    for name, box in (
        ("bn_b8_12x", 70.0),
        ("gn_b8_12x", 75.0),
        ("scratch/gn_pretrained_12x", 76.0),
    ):
        for seed in (0, 1):
            _run(
                root, study, name if "/" in name else f"batch_sweep/{name}", seed, box - 0.5 + seed
            )
    text, (images, _) = _report(study, root, tmp_path)
    assert images[2].endswith("; at 12x (2 seeds): BN 70.0 → 61.0, GN 75.0 → 76.0")
    assert images[3] == "agrees"
    assert "At 12x: BN 12x: box AP 70.0 at 8 images per step, 61.0 at 2 (change -9.0, " in text
    assert "GN 12x: box AP 75.0 at 8 images per step, 76.0 at 2 (change +1.0, " in text
    assert text.count("**Agrees with the paper**") == 2
    # GN losing more than BN turns the verdict: BN 70 -> 61 (-9), GN 90 -> 76 (-14)
    for seed in (0, 1):
        _run(root, study, "batch_sweep/gn_b8_12x", seed, 90.0 - 0.5 + seed)
    _, (images, _) = _report(study, root, tmp_path)
    assert images[2].endswith("GN 90.0 → 76.0") and images[3] == "does not agree"


def test_curves_plot_gives_the_probe_its_own_row(tmp_path):
    """A sweep's curves fill one row of panels (440 px at 4 in and 110 dpi); with a probe cell's
    curve the figure gets a second row. Placement's 12x cells are not a probe of its analysis."""
    from matplotlib.image import imread

    from reproduction.curves import family_curves, plot_curves

    study = load_study()
    root = tmp_path / "runs"
    curve = [(100, 10.0, 9.0), (200, 20.0, 18.0)]
    _run(root, study, "batch_sweep/gn_b2", 0, 20.0, curve=curve)
    fam = study.families["batch_sweep"]
    one = plot_curves(study, fam, family_curves(study, fam, root), tmp_path / "one.png")
    _run(
        root,
        study,
        "batch_sweep/bn_b2_12x",
        0,
        40.0,
        curve=[(1000, 30.0, 25.0), (2000, 40.0, 35.0)],
    )
    curves = family_curves(study, fam, root)
    assert set(curves) == {"batch_sweep/gn_b2", "batch_sweep/bn_b2_12x"}
    two = plot_curves(study, fam, curves, tmp_path / "two.png")
    assert imread(one).shape[0] == 440 and imread(two).shape[0] == 880
    _run(root, study, "placement/bn_star_2fc_12x", 0, 40.0, curve=curve)
    place = study.families["placement"]
    path = plot_curves(study, place, family_curves(study, place, root), tmp_path / "p.png")
    assert imread(path).shape[0] == 440
