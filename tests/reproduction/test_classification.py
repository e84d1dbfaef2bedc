"""reproduction/classification.py: the batch-sweep task is deterministic, one tiny cell runs end
to end into result.json (with its curve and the PreciseBN error), summarize computes mean ± std
as numpy does, and bad cells are refused with one line."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from detnorm.data.classification import PATTERNS, ClutteredShapes
from detnorm.data.shapes import CLASSES

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from reproduction.classification import collect, load_plan, main, run_dir, summarize  # noqa: E402
from reproduction.classification_schedule import restore  # noqa: E402
from reproduction.manifest import CONFIG_DIR  # noqa: E402

TINY = ["--synthetic", "--task", "cluttered", "--data-seed", "0", "--image-size", "32",
        "--width", "8", "--num-train", "8", "--num-val", "6", "--epochs", "1",
        "--lr-reference", "32", "--warmup-fraction", "0.05", "--eval-every-epochs", "0.5",
        "--num-workers", "0", "--checkpoint-period", "1000", "--no-weights", "--no-progress-bar"]  # fmt: skip


@pytest.fixture
def plan_file(tmp_path):
    plan = yaml.safe_load((CONFIG_DIR / "classification.yaml").read_text())
    plan["args"] = TINY
    plan["norms"]["bn"]["args"] = ["--norm", "bn", "--precise-bn-iters", "2", "--precise-bn-batch", "4"]  # fmt: skip
    plan["norms"]["gn"]["args"] = ["--norm", "gn", "--gn-groups", "4"]
    plan["schedule_probe"] = {"epochs": [2, 4], "cells": ["bn_b4", "gn_b2"], "seeds": [0]}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def test_sweep_task_is_deterministic_with_the_claimed_classes():
    ds = ClutteredShapes(24, seed=3)
    assert ds.classes == list(PATTERNS) and len(ds.classes) == 8
    x, y = ds[13]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 13 % 8
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert np.array_equal(ds.render(13), ClutteredShapes(24, seed=3).render(13))
    assert not np.array_equal(ds.render(13), ClutteredShapes(24, seed=3, split=1).render(13))
    assert not np.array_equal(ds.render(13), ClutteredShapes(24, seed=4).render(13))
    assert sorted(ds[i][1] for i in range(24)) == sorted(list(range(8)) * 3)
    shapes = ClutteredShapes(12, label="shape")
    assert shapes.classes == list(CLASSES) and shapes[7][1] == 1
    with pytest.raises(ValueError, match="label must be"):
        ClutteredShapes(4, label="colour")


def test_tiny_cell_runs_end_to_end_and_is_skipped_after(plan_file, tmp_path, capsys):
    argv = ["--plan", str(plan_file), "--root", str(tmp_path / "runs"), "run", "--cell", "bn_b4",
            "--seed", "0", "--in-process"]  # fmt: skip
    assert main(argv) == 0
    out = run_dir(tmp_path / "runs", "bn", 4, 0)
    rec = json.loads((out / "result.json").read_text())
    assert (rec["status"], rec["batch"], rec["steps"], rec["norm"]) == ("done", 4, 2, "bn")
    assert [p["step"] for p in rec["curve"]] == [1, 2] and 0 <= rec["val_error"] <= 100
    assert rec["precise_bn_batches"] == 2 and rec["val_error_precise_bn"] is not None
    assert rec["lr"] == pytest.approx(0.1 * 4 / 32) and rec["machine"]["omp_num_threads"] == "1"
    assert not (out / "checkpoints").exists()
    capsys.readouterr()
    assert main(argv) == 0
    assert "bn_b4 seed 0: skipped" in capsys.readouterr().out


def test_summarize_mean_std_is_numpys(plan_file, tmp_path):
    plan, root = load_plan(plan_file), tmp_path / "runs"
    errors = {("bn", 32): [20.0, 21.5, 19.25], ("gn", 2): [23.0, 24.0], ("bn", 2): [40.0]}
    for (norm, batch), values in errors.items():
        for seed, v in enumerate(values):
            d = run_dir(root, norm, batch, seed)
            d.mkdir(parents=True)
            rec = {"cell": f"{norm}_b{batch}", "seed": seed, "val_error": v, "seconds": 10.0,
                   "val_error_precise_bn": v - 5 if norm == "bn" else None,
                   "curve": [{"epoch": 1, "error": v + 3}, {"epoch": 2, "error": v}]}  # fmt: skip
            (d / "result.json").write_text(json.dumps(rec))
    rows = summarize(plan, root, tmp_path / "docs")["rows"]
    by = {(r["label"], r["batch"]): r for r in rows}
    for (norm, batch), values in errors.items():
        row = by[(norm.upper(), batch)]
        assert row["mean"] == pytest.approx(np.mean(values)) and row["n"] == len(values)
        assert row["std"] == pytest.approx(np.std(values, ddof=1) if len(values) > 1 else 0.0)
    assert by[("BN (PreciseBN)", 32)]["mean"] == pytest.approx(np.mean(errors[("bn", 32)]) - 5)
    assert by[("GN", 32)]["n"] == 0
    md = (tmp_path / "docs" / "classification.md").read_text()
    assert "20.2 ± 1.1 (3)" in md and "not yet run" in md
    assert (tmp_path / "docs" / "classification.png").stat().st_size > 1000
    assert json.loads((tmp_path / "docs" / "classification.json").read_text())["rows"]
    assert main(["--plan", str(plan_file), "--root", str(root), "estimate", "--jobs", "2"]) == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--norm", "ln"], "unknown norm 'ln'"), (["--batch", "3"], "unknown batch 3"),
     (["--cell", "bn_b1"], "unknown cell 'bn_b1'"), (["--jobs", "0"], "--jobs must be"),
     (["--epochs", "3"], "--epochs 3 is not in the plan: the sweep runs 1 and schedule_probe lists 1, 2, 4"),
     (["--epochs", "2", "--cell", "gn_b4"], "--cell gn_b4 is not in schedule_probe's cells (bn_b4, gn_b2)")],
)  # fmt: skip
def test_bad_cells_are_refused_in_one_line(plan_file, tmp_path, capsys, flags, message):
    assert main(["--plan", str(plan_file), "--root", str(tmp_path), "run", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("classification.py: error: ") and message in err
    assert err.count("\n") == 1 and not (tmp_path / "classification").exists()


def test_schedule_probe_run_doubles_the_steps_in_its_own_folder(plan_file, tmp_path):
    root = tmp_path / "runs"
    base = ["--plan", str(plan_file), "--root", str(root), "run", "--cell", "bn_b4", "--in-process"]
    assert main([*base, "--seed", "0"]) == 0 and main([*base, "--epochs", "2"]) == 0
    sweep = json.loads((run_dir(root, "bn", 4, 0) / "result.json").read_text())
    probe = json.loads((run_dir(root, "bn", 4, 0, 2) / "result.json").read_text())
    assert run_dir(root, "bn", 4, 0, 2).parent.name == "bn_b4_e2"
    assert (sweep["epochs"], probe["epochs"], probe["cell"]) == (1, 2, "bn_b4_e2")
    assert (sweep["steps"], probe["steps"]) == (2, 4)  # 8 images, 4 per step: 2 steps an epoch
    argv = probe["argv"]
    assert argv[len(argv) - 1 - argv[::-1].index("--epochs") + 1] == "2"  # the last one wins


def _write(root, norm, batch, seed, error, epochs=None):
    d = run_dir(root, norm, batch, seed, epochs)
    d.mkdir(parents=True)
    rec = {"cell": d.parent.name, "seed": seed, "val_error": error, "seconds": 5.0 + seed,
           "val_error_precise_bn": None, "steps": 3, "lr": 0.01, "machine": {"cpu": "x"},
           "date": "2026-12-02 10:00", "curve": [{"epoch": 1, "error": error + 1 + seed}]}  # fmt: skip
    (d / "result.json").write_text(json.dumps(rec))


def test_schedule_probe_reading_compares_the_last_doubling_with_the_seed_noise(
    plan_file, tmp_path, capsys
):
    plan, root = load_plan(plan_file), tmp_path / "runs"
    for seed, e in enumerate([20.0, 21.0, 22.0]):  # sample std 1.0
        _write(root, "bn", 4, seed, e)
        _write(root, "gn", 2, seed, e + 10)
    _write(root, "bn", 4, 0, 18.0, 2)
    _write(root, "bn", 4, 0, 17.5, 4)  # -0.5: within hypot(1, 0)
    _write(root, "bn", 4, 1, 17.5, 4)  # seed 1 too (beyond the probe's seed 0): std 0
    _write(root, "gn", 2, 0, 25.0, 2)  # 31 -> 25 and no 4-epoch run: 6 > hypot(1, 1)
    out = summarize(plan, root, tmp_path / "docs")
    rows = {r["cell"]: r for r in out["schedule"]}
    bn, gn = rows["bn_b4"], rows["gn_b2"]
    assert bn["seed_std"] == pytest.approx(np.std([20, 21, 22], ddof=1))  # 3 seeds at 1 epoch
    assert bn["noise"] == pytest.approx(1.0)  # hypot(the 3-seed std for one seed, 2 seeds' 0)
    assert [p["mean"] for p in bn["points"]] == [21.0, 18.0, 17.5]  # every seed run there
    assert [p["n"] for p in bn["points"]] == [3, 1, 2]
    assert bn["last_change"] == pytest.approx(0.5) and bn["verdict"] == "a plateau"
    assert bn["last_step"] == [2, 4] and gn["last_step"] == [1, 2]
    assert gn["last_change"] == pytest.approx(6.0) and gn["verdict"] == "still falling"
    md = (tmp_path / "docs" / "classification.md").read_text()
    assert "| BN 4/step | 21.0 (3) | 18.0 (1) | 17.5 (2) | -0.5 (2 → 4) | ±1.0 | a plateau |" in md
    assert (
        "| GN 2/step | 31.0 (3) | 25.0 (1) | not yet run | -6.0 (1 → 2) | ±1.4 | still falling |"
        in md
    )
    committed = json.loads((tmp_path / "docs" / "classification.json").read_text())
    assert {r["cell"] for r in committed["runs"]} >= {"bn_b4_e2", "bn_b4_e4", "gn_b2_e2"}
    est = ["--plan", str(plan_file), "--root", str(root), "--no-restore", "estimate"]
    capsys.readouterr()
    assert main(est) == 0
    lines = {
        ln.split(" | ")[0][2:]: ln
        for ln in capsys.readouterr().out.splitlines()
        if ln.startswith("| ")
    }
    assert lines["bn_b4_e2"].endswith("| 5 | 1 runs | 0 |")  # seed 0's own time, nothing left
    assert lines["bn_b4_e4"].endswith("| 0 |")  # seeds 0 and 1 ran: none left
    assert lines["gn_b2_e4"].endswith("| 1 |")
    png = (tmp_path / "docs" / "classification.png").read_bytes()
    assert int.from_bytes(png[20:24], "big") == 990  # the probe's second row of panels (9 in)


def test_restore_rebuilds_the_committed_runs_only_for_their_recipe(plan_file, tmp_path):
    plan, root, docs = load_plan(plan_file), tmp_path / "runs", tmp_path / "docs"
    for seed, e in enumerate([20.0, 21.5]):
        _write(root, "bn", 4, seed, e)
    _write(root, "bn", 4, 0, 18.0, 2)
    summarize(plan, root, docs)
    fresh = tmp_path / "fresh"
    _write(fresh, "bn", 4, 1, 99.0)  # a finished local run wins over the committed one
    stale = run_dir(fresh, "bn", 4, 0, 2)
    stale.mkdir(parents=True)
    (stale / "train.log").write_text("killed")  # unfinished here: the committed run replaces it
    assert restore(plan, fresh, docs / "classification.json") == 2
    got, want = collect(plan, fresh), collect(plan, root)
    assert [r["val_error"] for r in got["bn_b4"]] == [20.0, 99.0]
    assert got["bn_b4"][0]["curve"] == want["bn_b4"][0]["curve"] and got["bn_b4"][0]["restored"]
    probe = json.loads((stale / "result.json").read_text())
    assert (probe["val_error"], probe["epochs"], probe["batch"]) == (18.0, 2, 4)
    assert not (stale / "train.log").exists()
    assert restore(plan, fresh, docs / "classification.json") == 0  # nothing left to restore
    other = yaml.safe_load(plan_file.read_text())
    other["args"] = [*other["args"][:-1], "--no-weights"]
    other["args"][other["args"].index("--width") + 1] = "16"
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    assert restore(load_plan(tmp_path / "other.yaml"), tmp_path / "third", docs / "classification.json") == 0  # fmt: skip
    assert not (tmp_path / "third").exists()
