"""tools/compare.py: run directories -> markdown table and PNG plots."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import yaml
from PIL import Image

from detnorm.analysis.compare import (
    build_table,
    load_run,
    load_runs,
    norm_summary,
    read_metrics_csv,
    total_steps,
)
from detnorm.analysis.plots import smooth
from detnorm.cli.compare import main

TERMS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def write_run(
    root,
    name,
    *,
    norms=("gn",) * 4,
    pretrained="imagenet",
    final=None,
    steps=200,
    val_every=50,
    decay=300.0,
    metrics_json=True,
    batch=2,
    devices=1,
):
    """A run directory in the contract format; val AP grows to ``final`` = (box AP, mask AP)."""
    run = root / name
    run.mkdir(parents=True)
    config = {
        "norm": norms[0],
        "gn_groups": 32,
        "depth": 18,
        "pretrained": pretrained,
        "schedule": "1x",
        "max_steps": steps,
        "batch_size": batch,
        "devices": devices,
        "num_nodes": 1,
        "total_batch_size": batch * devices,
        "seed": 0,
        "data": "embedded",
    }
    for comp, norm in zip(("backbone", "fpn", "box_head", "mask_head"), norms, strict=True):
        config[f"{comp}_norm"] = norm
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    val_cols = [f"val/{t}_{s}" for t in ("bbox", "segm") for s in ("AP", "AP50", "AP75")]
    columns = ["epoch", "lr", "step", "train/loss", *[f"train/{t}" for t in TERMS], *val_cols]
    rng = np.random.default_rng(len(name))
    with open(run / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for step in range(0, steps, 5):
            terms = {
                f"train/{t}": (0.2 + 0.1 * i) * math.exp(-step / decay) + 0.02 * rng.random()
                for i, t in enumerate(TERMS)
            }
            writer.writerow(
                {
                    "epoch": step // 100,
                    "lr": 0.02,
                    "step": step,
                    "train/loss": sum(terms.values()),
                    **terms,
                }
            )
            if final and (step + 5) % val_every == 0:
                frac = (step + 5) / steps
                row = {"epoch": step // 100, "step": step + 4}
                for col in val_cols:
                    base = final[0] if "bbox" in col else final[1]
                    row[col] = base * frac * (1.5 if "AP50" in col else 1.0)
                writer.writerow(row)
    if final and metrics_json:
        metrics = {
            t: {s: v + i for i, s in enumerate(STATS)}
            for t, v in zip(("bbox", "segm"), final, strict=True)
        }
        metrics["step"] = steps
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture
def runs(tmp_path):
    a = write_run(
        tmp_path, "bn_frozen", norms=("frozen_bn", "none", "none", "none"), final=(30.0, 27.5)
    )
    b = write_run(
        tmp_path,
        "gn_scratch",
        pretrained="none",
        final=(33.25, 29.0),
        decay=150.0,
        batch=2,
        devices=8,
    )
    c = write_run(tmp_path, "pending", final=None)
    return a, b, c


def table_rows(table):
    lines = [line for line in table.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        for line in lines[2:]
    ]


def test_table_values_and_order(runs):
    a, b, c = runs
    table = build_table(load_runs([c, a, b]), metric="segm/AP")
    rows = table_rows(table)
    assert [r["run"] for r in rows] == ["gn_scratch", "bn_frozen", "pending"]  # best mask AP first
    gn, bn, pending = rows
    assert (gn["norm"], gn["init"], gn["batch"], gn["steps"]) == ("gn", "scratch", "16", "200")
    assert (bn["norm"], bn["init"], bn["batch"]) == ("frozen_bn/none/none/none", "imagenet", "2")
    assert (gn["box AP"], gn["mask AP"], gn["box AP50"], gn["mask AP75"]) == (
        "33.2",
        "29.0",
        "34.2",
        "31.0",
    )
    assert (bn["box AP"], bn["mask AP"], bn["eval step"]) == ("30.0", "27.5", "200")
    assert pending["mask AP"] == pending["box AP"] == pending["eval step"] == "-"
    assert "backbone/fpn/box_head/mask_head" in table  # the legend for compact norms

    zero = write_run(a.parent, "zero_ap", final=(0.0, 0.0))
    order = [r["run"] for r in table_rows(build_table(load_runs([c, zero, b])))]
    assert order == ["gn_scratch", "zero_ap", "pending"]  # 0.0 is a value, not a missing one

    by_box = table_rows(build_table(load_runs([a, b]), metric="bbox/APs"))
    assert [r["run"] for r in by_box] == ["gn_scratch", "bn_frozen"]
    assert by_box[0]["box APs"] == f"{33.25 + 3:.1f}"  # the extra sort column is shown


def test_run_without_metrics_json_uses_last_validation(tmp_path):
    run = write_run(tmp_path, "running", final=(20.0, 10.0), metrics_json=False, steps=100)
    row = table_rows(build_table([load_run(run)]))[0]
    assert (row["box AP"], row["mask AP"], row["eval step"]) == ("20.0", "10.0", "99*")
    assert row["mask AP50"] == "15.0"


def test_cli_writes_table_and_plots(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main([str(r) for r in runs] + ["--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (out / "compare.md").read_text() in printed
    for name in ("ap.png", "loss.png"):
        with Image.open(out / name) as im:
            im.verify()
        with Image.open(out / name) as im:
            assert im.format == "PNG"
            assert 800 <= im.width <= 2000 and 400 <= im.height <= 1500
            pixels = np.asarray(im.convert("L"))
            assert pixels.std() > 5  # something was drawn


def test_bad_run_dir_names_it(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "config.yaml" in err and str(tmp_path / "empty") in err
    assert main([str(tmp_path / "absent"), "--output", str(tmp_path / "o")]) == 2
    assert "absent" in capsys.readouterr().err


def test_bad_metric_and_corrupt_metrics_json(runs, tmp_path, capsys):
    a = runs[0]
    assert main([str(a), "--metric", "segm/mAP", "--output", str(tmp_path / "o")]) == 2
    assert "--metric" in capsys.readouterr().err
    (a / "metrics.json").write_text("{not json")
    assert main([str(a), "--output", str(tmp_path / "o")]) == 2
    assert "metrics.json" in capsys.readouterr().err


def test_csv_resume_duplicates_keep_later_rows(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,train/loss,val/segm_AP\n0,1.0,\n10,0.9,\n10,,5.0\n5,0.7,\n10,0.6,\n")
    hist = read_metrics_csv(path)
    np.testing.assert_array_equal(hist["train/loss"][0], [0, 5, 10])
    np.testing.assert_array_equal(hist["train/loss"][1], [1.0, 0.7, 0.6])
    np.testing.assert_array_equal(hist["val/segm_AP"][1], [5.0])


def test_names_disambiguated_and_norm_summary(tmp_path):
    a = write_run(tmp_path / "x", "run", final=None)
    b = write_run(tmp_path / "y", "run", final=None)
    assert [r.name for r in load_runs([a, b])] == ["x/run", "y/run"]
    assert norm_summary({"norm": "gn", "backbone_norm": "frozen_bn"}) == "frozen_bn/gn/gn/gn"


def test_steps_from_schedule_when_max_steps_unset():
    # 1x is 90k iterations at 16 images per step: 4x as many at 4 images per step
    assert total_steps({"schedule": "1x", "max_steps": None, "total_batch_size": 4}) == 360_000
    assert total_steps({"schedule": "3x", "max_steps": 50, "total_batch_size": 4}) == 50
    assert total_steps({"schedule": None}) is None


def test_smooth_is_debiased_ema():
    values = np.array([1.0, 3.0, 2.0])
    alpha = 2 / (3 + 1)
    expected_last = (alpha * 2 + alpha * (1 - alpha) * 3 + alpha * (1 - alpha) ** 2 * 1) / (
        1 - (1 - alpha) ** 3
    )
    out = smooth(values, 3)
    assert out[0] == 1.0 and out[-1] == pytest.approx(expected_last)
    np.testing.assert_array_equal(smooth(values, 1), values)
