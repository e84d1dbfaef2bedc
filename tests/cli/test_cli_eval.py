"""tools/eval.py results mode, in-process through detnorm.cli.eval.main."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from helpers.coco_eval_data import LABEL_TO_CAT, make_gt, make_outputs

from detnorm.cli.eval import main
from detnorm.evaluation import evaluate_coco, predictions_to_coco

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    dataset, masks = make_gt(seed=5, first_id=0)
    results = predictions_to_coco(*make_outputs(dataset, masks, seed=6), LABEL_TO_CAT)
    combined = [  # one detection list carrying both fields, as detectron2 writes it
        {**b, "segmentation": s["segmentation"]}
        for b, s in zip(results["bbox"], results["segm"], strict=True)
    ]
    paths = {"gt": root / "gt.json", "bbox": root / "bbox.json", "combined": root / "all.json"}
    for key, obj in (("gt", dataset), ("bbox", results["bbox"]), ("combined", combined)):
        paths[key].write_text(json.dumps(obj))
    return {"root": root, "dataset": dataset, "results": results, **paths}


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_combined_results_file(files, tmp_path, capsys):
    code, out, err = run(
        ["--ann", files["gt"], "--results", files["combined"], "--output-dir", tmp_path], capsys
    )
    assert code == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == evaluate_coco(files["dataset"], files["results"])  # bbox and segm inferred
    assert out.startswith("| | AP | AP50 |")
    assert f"| bbox | {metrics['bbox']['AP']:.1f} |" in out
    assert f"| segm | {metrics['segm']['AP']:.1f} |" in out
    assert str(tmp_path / "metrics.json") in out


def test_bbox_only_file_defaults_to_its_directory(files, capsys):
    code, out, err = run(
        ["--ann", files["gt"], "--results", files["bbox"], "--per-category", "--backend", "faster"]
        if _has_faster()
        else ["--ann", files["gt"], "--results", files["bbox"], "--per-category"],
        capsys,
    )
    assert code == 0, err
    metrics = json.loads((files["root"] / "metrics.json").read_text())
    assert set(metrics) == {"bbox"}
    expected = evaluate_coco(files["dataset"], files["results"], iou_types=("bbox",))["bbox"]
    for key, value in expected.items():
        if key != "per_category":
            assert metrics["bbox"][key] == pytest.approx(value, abs=1e-4)
    assert "| category | bbox AP |" in out and "| dog |" in out


def _has_faster() -> bool:
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--results", "{bbox}"], "--ann: required"),
        (["--ann", "{gt}"], "--results: required"),
        (["--ann", "{root}/nope.json", "--results", "{bbox}"], "--ann: file not found"),
        (["--ann", "{gt}", "--results", "{root}/nope.json"], "--results: file not found"),
        (["--ann", "{bad_json}", "--results", "{bbox}"], "--ann: not valid JSON"),
        (["--ann", "{gt}", "--results", "{bad_json}"], "--results: not valid JSON"),
        (["--ann", "{bbox}", "--results", "{bbox}"], "--ann "),
        (["--ann", "{gt}", "--results", "{gt}"], "--results .*must be a JSON list"),
        (["--ann", "{gt_no_crowd}", "--results", "{bbox}"], "--ann .*annotation 0 lacks iscrowd"),
        (
            ["--ann", "{gt}", "--results", "{unknown_img}"],
            "image ids not in the ground truth: 7, 99",
        ),
        (
            ["--ann", "{gt}", "--results", "{unknown_cat}"],
            "category ids not in the ground truth: 2",
        ),
        (
            ["--ann", "{gt}", "--results", "{bbox}", "--iou-types", "segm"],
            "--iou-types: segm needs",
        ),
        (["--ann", "{gt}", "--results", "{bbox}", "--iou-types", "mask"], "--iou-types: invalid"),
        (["--ann", "{gt}", "--results", "{bbox}", "--backend", "x"], "--backend: invalid choice"),
        (
            ["--ann", "{gt}", "--results", "{bbox}", "--bogus", "1"],
            "unrecognized arguments: --bogus",
        ),
        (["--ann", "{gt}", "--results", "{bbox}", "--data", "d"], "--data: only used with"),
        (["--checkpoint", "{bbox}", "--results", "{bbox}"], "--results: not allowed with"),
        (["--checkpoint", "{root}/nope.ckpt"], "--checkpoint: file not found"),
    ],
)
def test_bad_values_exit_nonzero_with_one_line(files, argv, expected, capsys):
    root = files["root"]
    (root / "bad.json").write_text("{not json")
    det = {"bbox": [1, 1, 5, 5], "score": 0.5}
    extra = {
        "bad_json": root / "bad.json",
        "unknown_img": root / "unknown_img.json",
        "unknown_cat": root / "unknown_cat.json",
    }
    extra["unknown_img"].write_text(
        json.dumps([{**det, "image_id": i, "category_id": 1} for i in (10, 99, 7)])
    )
    no_crowd = json.loads(files["gt"].read_text())
    del no_crowd["annotations"][0]["iscrowd"]
    extra["gt_no_crowd"] = root / "gt_no_crowd.json"
    extra["gt_no_crowd"].write_text(json.dumps(no_crowd))
    extra["unknown_cat"].write_text(json.dumps([{**det, "image_id": 10, "category_id": 2}]))
    fmt = {k: files[k] for k in ("gt", "bbox", "root")} | extra
    code, out, err = run([a.format(**fmt) for a in argv], capsys)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tools/eval.py: error: ")
    assert re.search(expected, lines[0]), lines[0]


def test_checkpoint_mode_takes_the_training_flags(monkeypatch, tmp_path, capsys):
    """Checkpoint mode's data and hardware flags are training's, made from the same schema, and
    reach ``detnorm.engine.run.evaluate_checkpoint``; bad values are refused as training does."""
    import detnorm.engine.run as engine_run

    seen = {}

    def evaluate_checkpoint(ckpt, data, **kw):
        seen.update(ckpt=ckpt, data=data, **kw)
        module = types.SimpleNamespace(
            last_metrics={}, trainer=types.SimpleNamespace(is_global_zero=False)
        )
        return module, tmp_path

    monkeypatch.setattr(engine_run, "evaluate_checkpoint", evaluate_checkpoint)
    ckpt = tmp_path / "m.ckpt"
    ckpt.write_bytes(b"")
    (tmp_path / "v.json").write_text("{}")
    argv = ["--checkpoint", ckpt, "--val-ann", tmp_path / "v.json", "--batch-size", "3",
            "--accelerator", "cpu", "--test-size", "96"]  # fmt: skip
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert seen["ckpt"] == ckpt and seen["data"]["val_ann"] == str(tmp_path / "v.json")
    assert seen["data"]["batch_size"] == 3 and seen["trainer_kw"] == {"accelerator": "cpu"}
    assert seen["test_size"] == 96 and seen["backend"] is None  # None: the checkpoint's own
    code, _, err = run(["--checkpoint", ckpt, "--batch-size", "0"], capsys)
    assert (
        code == 2
        and err.strip() == "tools/eval.py: error: --batch-size: must be an integer >= 1, got 0"
    )
    code, _, err = run(["--checkpoint", ckpt, "--data", tmp_path / "nope"], capsys)
    assert code == 2 and "--data: directory not found" in err
    code, _, err = run(
        ["--ann", tmp_path / "v.json", "--results", ckpt, "--batch-size", "2"], capsys
    )
    assert code == 2 and "--batch-size: only used with --checkpoint" in err


def test_shim_runs_from_a_checkout(files, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "eval.py"), "--ann", str(files["gt"]),
         "--results", str(files["bbox"]), "--output-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "metrics.json").is_file() and "| bbox |" in proc.stdout
