"""``tools/study.py estimate``: the time per training image and per extra evaluation fitted to
finished runs written by the tests (checked against the rates the runs were made with)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from helpers.study_runs import write_run as _run  # noqa: E402

from reproduction.cli import main  # noqa: E402
from reproduction.estimate import measured_rates  # noqa: E402
from reproduction.runner import cell_config, load_study  # noqa: E402


def test_estimate_fits_the_finished_runs(tmp_path, capsys):
    study = load_study()
    root = tmp_path / "runs"
    cells = [
        "batch_sweep/gn_b8",
        "batch_sweep/gn_b2",
        "batch_steps/gn_b2",
        "placement/bn_star_gn_head",
    ]
    for cell_id in cells:
        for seed in study.seeds:
            cfg = cell_config(study, study.cell(cell_id), seed)
            images = cfg["max_steps"] * cfg["batch_size"]
            secs = 20.0 + 0.125 * images + 15.0 * (study.curve_evals(seed) - 1)
            _run(root, study, cell_id, seed, 1.0, seconds=secs)
    _run(root, study, "batch_sweep/bn_b2", 0, 1.0, seconds=9999.0, threads=None)  # not 1 thread
    paused = _run(root, study, "batch_sweep/bn_b8", 1, 1.0, seconds=20 + 250 + 600.0)
    record = json.loads((paused / "study.json").read_text())
    (paused / "study.json").write_text(json.dumps(record | {"paused_seconds": 600.0}))
    rates = measured_rates(study, root)
    assert rates["seconds_per_image"] == pytest.approx(0.125)
    assert rates["overhead_seconds"] == pytest.approx(20.0)
    assert rates["extra_eval_seconds"] == pytest.approx(15.0)
    assert main(["--no-restore", "--root", str(root), "estimate", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "rates from 13 finished runs (one thread each)" in out and "stage 1" in out
    est = json.loads((root / "estimate.json").read_text())
    # every cell counts once, in the first stage that runs it (placement reuses stage 1's runs)
    assert sum(est["stages"].values()) == pytest.approx(
        est["total_seconds"], abs=len(est["stages"])
    )
    row = next(r for r in est["cells"] if r["cell"] == "batch_sweep/gn_b2")
    assert row["seconds"] == pytest.approx(
        3 * (20 + 0.125 * 2000) + 15 * (study.curve["evals"] - 1)
    )
    # what is left: the runs without a finished metrics.json, each at its own seed's time, and
    # the pretraining of backbones whose weights are missing (here all; no pretraining rate)
    rows = {r["cell"]: r for r in est["cells"]}
    assert (row["runs_left"], row["seconds_left"]) == (0, 0)
    bn2 = rows["batch_sweep/bn_b2"]  # seed 0 ran (on 2 threads: left out of the fit only)
    assert bn2["runs_left"] == 2 and bn2["seconds_left"] == pytest.approx(2 * (20 + 0.125 * 2000))
    assert rows["batch_sweep/bn_b4"]["runs_left"] == 3
    assert rows["groups/in_12x"]["runs_left"] == 3 and rows["groups/in_12x"]["optional"]
    left = sum(r["seconds_left"] for r in est["cells"]) / 2
    assert est["left_seconds"] == pytest.approx(left, abs=1)
    runs_left = sum(r["runs_left"] for r in est["cells"])
    assert f"left to run, optional cells included: {runs_left} runs and pretraining bn, gn, " \
           f"gn8, in, ln, {left / 3600:.2f} h at 2 at a time" in out  # fmt: skip


def _timed_runs(root, study, cells, per_image, per_eval, model):
    for cell_id in cells:
        for seed in study.seeds:
            cfg = cell_config(study, study.cell(cell_id), seed)
            images = cfg["max_steps"] * cfg["batch_size"]
            secs = 20.0 + per_image * images + per_eval * (study.curve_evals(seed) - 1)
            d = _run(root, study, cell_id, seed, 1.0, seconds=secs)
            record = json.loads((d / "study.json").read_text())
            record["machine"]["cpu_model"] = model
            (d / "study.json").write_text(json.dumps(record))


def test_estimate_fits_this_cpus_runs_and_no_negative_rate(tmp_path, monkeypatch):
    """Runs on two CPUs: the fit takes only those of this machine's model when it has three;
    fitted together, a slow CPU's short runs beside a fast CPU's curve runs would give a
    negative time per evaluation, which is fixed at 0."""
    import reproduction.estimate as estimate

    study = load_study()
    root = tmp_path / "runs"
    _timed_runs(root, study, ["batch_sweep/gn_b8", "batch_sweep/gn_b4"], 0.25, 40.0, "CPU B")
    _timed_runs(root, study, ["batch_sweep/gn_b2", "scratch/gn_scratch_3x"], 0.1, 40.0, "CPU A")
    monkeypatch.setattr(estimate, "cpu_model", lambda: "CPU A")
    rates = measured_rates(study, root)
    assert rates["source"] == "6 finished runs (one thread each) on CPU A"
    assert rates["seconds_per_image"] == pytest.approx(0.1)
    assert rates["extra_eval_seconds"] == pytest.approx(40.0)
    monkeypatch.setattr(estimate, "cpu_model", lambda: "CPU C")  # no runs of its own: all
    rates = measured_rates(study, root)
    assert rates["source"] == "12 finished runs (one thread each)"
    assert min(rates["overhead_seconds"], rates["seconds_per_image"],
               rates["extra_eval_seconds"]) >= 0  # fmt: skip
    x = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])
    assert list(estimate._nonnegative_fit(x, np.array([3.0, 2.0, 1.0]))) == pytest.approx(
        [2.0, 0.0]
    )


def test_estimate_counts_a_ddp_cell_once_per_process(tmp_path, capsys):
    """SyncBN from scratch runs as 2 processes of 1 image: its finished runs stay out of the
    single-process fit, and it costs its measured wall time twice (process-seconds), both in
    the estimate and in the report's total."""
    study = load_study()
    root = tmp_path / "runs"
    total = 0.0
    for cell_id in ["batch_sweep/gn_b2", "scratch/gn_scratch_3x"]:
        for seed in study.seeds:
            cfg = cell_config(study, study.cell(cell_id), seed)
            secs = 20.0 + 0.125 * cfg["max_steps"] * cfg["batch_size"]
            secs += 15.0 * (study.curve_evals(seed, study.cell(cell_id)) - 1)
            _run(root, study, cell_id, seed, 1.0, seconds=secs)
            total += secs
    ddp = "scratch/syncbn_scratch_3x"
    cfg = cell_config(study, study.cell(ddp))
    assert (cfg["devices"], cfg["batch_size"]) == (2, 1)
    for seed, secs in ((0, 1600.0), (1, 1400.0)):
        _run(root, study, ddp, seed, 50.0, seconds=secs)
    rates = measured_rates(study, root)  # the DDP runs would pull the line off 0.125
    assert rates["source"] == "6 finished runs (one thread each)"
    assert rates["seconds_per_image"] == pytest.approx(0.125)
    assert main(["--no-restore", "--root", str(root), "estimate", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    row = next(
        r for r in json.loads((root / "estimate.json").read_text())["cells"] if r["cell"] == ddp
    )
    assert row["seconds"] == pytest.approx(2 * (1600 + 1400 + 1500))  # seed 2 at the mean
    assert (row["runs_left"], row["seconds_left"]) == (1, pytest.approx(3000.0))
    assert f"| {ddp} (optional) | {cfg['max_steps']} | 6000 | 3000 | 3 | 1 |" in out
    report = tmp_path / "REPRODUCTION.md"
    assert main(["--no-restore", "--root", str(root), "report", "--output", str(report)]) == 0
    text = report.read_text()
    assert f"| {ddp} (2 processes) | 2 | 1500 |" in text
    assert f"Total: 8 runs took {(total + 2 * 3000) / 60:.0f} process-minutes" in text
    # no finished DDP run: each process's half of the images on the line, twice
    for seed in (0, 1):
        (root / "scratch" / "syncbn_scratch_3x" / f"seed{seed}" / "metrics.json").unlink()
    assert main(["--no-restore", "--root", str(root), "estimate", "--jobs", "2"]) == 0
    row = next(
        r for r in json.loads((root / "estimate.json").read_text())["cells"] if r["cell"] == ddp
    )
    evals = sum(study.curve_evals(s, study.cell(ddp)) - 1 for s in study.seeds)
    assert row["seconds"] == pytest.approx(2 * (3 * (20 + 0.125 * 3000) + 15 * evals))
