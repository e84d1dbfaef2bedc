"""tools/study.py: every cell resolves, one cell runs end to end (pretraining included) on tiny
data, and the report aggregates runs into mean ± std tables and plots, or says "not yet run"."""

import hashlib
import json
import sys
from pathlib import Path

import pytest
import yaml

from detnorm.config import build_config

# reproduction/ is a folder of the clone, not of the installed package (as in tools/study.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from reproduction.cli import main  # noqa: E402
from reproduction.curves import read_curve  # noqa: E402
from reproduction.report import collect, mean_std  # noqa: E402
from reproduction.runner import cell_config, load_study, run_dir, validate_cell  # noqa: E402

TINY = {"train_scales": [64], "max_size": 96, "test_size": 64, "num_workers": 0,
        "precise_bn_iters": 2, "log_every_n_steps": 1,
        "model_kwargs": {"rpn_pre_nms_top_n_train": 100, "rpn_post_nms_top_n_train": 50,
                         "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50,
                         "box_batch_size_per_image": 16, "box_detections_per_img": 20}}  # fmt: skip
PRETRAIN = ("--max-steps 2 --num-train 8 --num-val 6 --batch-size 4 --image-size 32 "
            "--num-workers 0 --checkpoint-period 1")  # fmt: skip


def test_every_cell_resolves(tmp_path):
    study = load_study()
    assert len(study.seeds) >= 3
    for cell_id in study.cell_ids():
        cell = study.resolve(study.cell(cell_id))
        cfg = validate_cell(study, cell, tmp_path / cell_id)
        assert cfg == build_config([tmp_path / cell_id / "cell.yaml"])
        per_step = cfg["batch_size"] * cfg["devices"]
        assert cfg["max_steps"] * per_step == study.images_per_cell * cell.multiple
        assert cfg["eval_period"] is None and cfg["depth"] == 18
        curve = cell_config(study, cell, study.curve["seeds"][0])
        evals = cell.evals or study.curve["evals"]  # a cell's own count wins
        assert curve["eval_period"] == -(-curve["max_steps"] // evals)
        assert cell_config(study, cell, 1)["eval_period"] is None  # other seeds: at the end
    steps = [
        cell_config(study, study.resolve(study.cell(f"batch_steps/gn_b{b}"))) for b in (8, 4, 2)
    ]
    assert len({c["max_steps"] for c in steps}) == 1  # equal steps: an 8-image cell's
    assert [c["batch_size"] for c in steps] == [8, 4, 2]
    sweep = [cell_config(study, study.cell(f"batch_sweep/bn_b{b}")) for b in (8, 4, 2, 1)]
    assert [c["max_steps"] * c["batch_size"] for c in sweep] == [study.images_per_cell] * 4
    assert study.resolve(study.cell("placement/gn_all")).id == "batch_sweep/gn_b2"
    long = cell_config(study, study.cell("scratch/gn_scratch_12x"), study.curve["seeds"][0])
    assert (long["max_steps"], long["eval_period"]) == (12000, 1000)  # evals: 12
    with pytest.raises(ValueError, match="unknown cell"):
        study.cell("batch_sweep/nope")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from detnorm.data.synthetic import generate_dataset

    base = tmp_path_factory.mktemp("study")
    data = generate_dataset(base / "data", num_train=4, num_val=2, image_size=64)
    (base / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    return base, data


def test_run_one_cell_with_pretraining(tiny, capsys):
    base, data = tiny
    root = base / "runs"
    argv = ["--root", str(root), "--images", "4", "run", "--cell", "batch_sweep/gn_b2",
            "--seed", "0", "--data", str(data), "--config", str(base / "tiny.yaml"),
            "--in-process", "--pretrain-args", PRETRAIN]  # fmt: skip
    assert main(argv) == 0
    out = root / "batch_sweep" / "gn_b2" / "seed0"
    metrics = json.loads((out / "metrics.json").read_text())
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert metrics["step"] == 2 and config["max_steps"] == 2 and config["seed"] == 0
    assert config["pretrained"] == str(root / "pretrain" / "gn" / "backbone.pth")
    assert config["backbone_norm"] == "gn" and config["lr"] == pytest.approx(0.16 * 2 / 16)
    assert config["eval_period"] == 1  # seed 0 is a curve seed: evaluations during training
    assert [p["step"] for p in read_curve(out)] == [1, 2]
    record = json.loads((out / "study.json").read_text())
    assert record["status"] == "done" and record["seconds"] > 0
    weights = (root / "pretrain" / "gn" / "backbone.pth").read_bytes()
    digest = hashlib.sha256(weights).hexdigest()[:16]  # which pretraining the run fine-tuned
    assert record["backbone"]["name"] == "gn" and record["backbone"]["sha256"] == digest
    pretrained = json.loads((root / "pretrain" / "gn" / "study_pretrain.json").read_text())
    assert pretrained["sha256"] == digest and pretrained["machine"]["cpu_count"] > 0
    assert not (out / "checkpoints").exists()
    assert "box AP" in capsys.readouterr().out
    assert main(argv) == 0  # finished: skipped
    assert "seed 0: skipped" in capsys.readouterr().out


def _fake_run(root, study, cell_id, seed, box, mask):
    d = run_dir(root, study.cell(cell_id), seed)
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"bbox": {"AP": box}, "segm": {"AP": mask}}))
    (d / "study.json").write_text(
        json.dumps({"seconds": 100.0 + seed, "machine": {"cpu_count": 2}})
    )


def test_report_aggregates_mean_std_and_plots(tmp_path):
    study = load_study()
    root = tmp_path / "runs"
    _fake_run(root, study, "batch_sweep/gn_b2", 0, 10.0, 5.0)
    _fake_run(root, study, "batch_sweep/gn_b2", 1, 20.0, 7.0)
    _fake_run(root, study, "batch_sweep/bn_b2", 0, 4.0, 3.0)
    for name, top1 in (("gn", 87.0), ("gn.replaced-20260101-000000", 11.0)):
        (root / "pretrain" / name).mkdir(parents=True)
        meta = {"norm": "gn", "steps": 9, "train_seconds": 5, "top1": top1, "classes": list("abcdef"),
                "data": "shapes"}  # fmt: skip
        (root / "pretrain" / name / "backbone.pth.json").write_text(json.dumps(meta))
    failed = run_dir(root, study.cell("batch_sweep/bn_b8"), 2)
    failed.mkdir(parents=True)
    (failed / "study.json").write_text(json.dumps({"status": "failed", "exit": 1}))
    (failed / "train.log").write_text("detnorm-train: stopped: non-finite loss at step 9 (rank 0)")
    results = collect(study, root)
    assert results["placement/gn_all"].values == {"bbox": [10.0, 20.0], "segm": [5.0, 7.0]}
    assert mean_std([10.0, 20.0]) == pytest.approx((15.0, 7.0710678))
    output = tmp_path / "REPRODUCTION.md"
    assert main(["--no-restore", "--root", str(root), "report", "--output", str(output)]) == 0
    text = output.read_text()
    b2, b8 = study.images_per_cell // 2, study.images_per_cell // 8
    row = f"| batch_sweep/gn_b2 | GN | {b2} × 2 | 2 | 15.0 ± 7.1 (n=2) | 6.0 ± 1.4 (n=2) | 100 |"
    assert row in text
    assert "| 4.0 ± 0.0 (n=1) | 3.0 ± 0.0 (n=1) |" in text
    assert f"batch_sweep/bn_b8 | BN | {b8} × 8 | 0 + 1 failed | not yet run | not yet run |" in text
    assert (
        "Failed runs, left out of the means: batch_sweep/bn_b8 seed 2 (diverged: non-finite "
        "loss at step 9)." in text
    )
    assert f"GN everywhere (+FPN, mask head) | {b2} × 2 | 2 | 15.0 ± 7.1 (n=2)" in text
    for family in ("batch_sweep", "placement", "scratch"):
        png = tmp_path / "docs" / "study" / f"{family}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](docs/study/{family}.png)" in text
    assert not (tmp_path / "docs" / "study" / "batch_steps.png").exists()  # no runs: no plot
    assert "38.5" in text and "not yet run" in text  # the paper's numbers beside ours
    runs = json.loads((tmp_path / "docs" / "study" / "runs.json").read_text())
    assert sorted((r["cell"], r["seed"], r["box_ap"]) for r in runs) == [
        ("batch_sweep/bn_b2", 0, 4.0), ("batch_sweep/gn_b2", 0, 10.0),
        ("batch_sweep/gn_b2", 1, 20.0)]  # fmt: skip
    assert "BN − GN at the same batch: -11.0 ± 7.1 at 2 box AP." in text
    assert "- Pretrained `gn` backbone (gn, 9 steps, 5 s): top-1 87.0 % (chance 16.7 %)" in text
    assert "top-1 11.0" not in text  # a backbone set aside is not reported


def test_report_without_runs_says_not_yet_run(tmp_path):
    output = tmp_path / "REPRODUCTION.md"
    assert (
        main(["--no-restore", "--root", str(tmp_path / "none"), "report", "--output", str(output)])
        == 0
    )
    text = output.read_text()
    assert "**Not yet run**: no run of the study has finished." in text
    assert text.count("Small-scale result: not yet run.") == len(load_study().families)
    rows = [line for line in text.splitlines() if line.startswith(("| batch_sweep/", "| groups/"))]
    # batch sweep: 12 one-epoch cells and 9 of the 12x probe; groups: 4 and 4 of the 12x probe
    assert len(rows) == 29 and all(r.count("not yet run") == 2 for r in rows)
    assert "Agrees" not in text and "agree with" not in text
    assert not (tmp_path / "docs").exists()


def test_report_verdicts_come_from_the_measured_numbers(tmp_path):
    study = load_study()
    root = tmp_path / "runs"
    for seed, (b8, b2) in enumerate([(30.0, 10.0), (32.0, 12.0)]):
        _fake_run(root, study, "batch_sweep/bn_b8", seed, b8, b8)
        _fake_run(root, study, "batch_sweep/bn_b2", seed, b2, b2)
        _fake_run(root, study, "batch_sweep/gn_b8", seed, 30.0 + seed, 20.0)
        _fake_run(root, study, "batch_sweep/gn_b2", seed, 30.5 + seed, 20.0)
    _fake_run(root, study, "groups/gn8", 0, 5.0, 5.0)
    _fake_run(root, study, "batch_sweep/frozen_bn_b2", 0, 16.0, 15.0)
    output = tmp_path / "REPRODUCTION.md"
    assert main(["--no-restore", "--root", str(root), "report", "--output", str(output)]) == 0
    text = output.read_text()
    assert ("**Agrees with the paper**: from the largest to the smallest batch, BN's box AP changes "
            "by -20.0 and GN's by +0.5.") in text  # fmt: skip
    assert "BN − GN at the same batch: +0.5 ± 1.6 at 8, -20.0 ± 1.6 at 2 box AP." in text
    assert "BN − BN* at the same batch: -5.0 ± 1.4 at 2 box AP." in text
    # groups: G=8 and G=32 (the batch sweep's GN at 2) measured, LN and IN not
    assert "No verdict until every cell has runs (groups/ln, groups/in)." in text


def test_study_dataset_is_generated_once_and_passed_to_runs(tmp_path):
    """study.yaml's ``dataset`` makes <root>/data with those generator keywords; --data wins."""
    study = load_study()
    assert not study.dataset, "the study runs on the embedded dataset, the main job's"
    study.dataset = {"num_train": 3, "num_val": 2, "image_size": 48, "objects": (1, 2)}
    root = tmp_path / "runs"
    data = study.data_root(root)
    assert data == str(root / "data")
    meta = json.loads((root / "data" / "meta.json").read_text())
    assert meta["num_train"] == 3 and meta["objects"] == [1, 2]
    assert study.data_root(root, "/elsewhere") == "/elsewhere"
    study.dataset = {}
    assert study.data_root(root) is None  # no dataset section: the embedded data


def test_backbone_pretrained_with_other_arguments_is_redone_and_kept(tmp_path, monkeypatch):
    import reproduction.runner as study_mod

    calls = []

    def fake_invoke(tool, argv, log, in_process, threads=None):
        out = tmp_path / "pretrain" / "gn"
        calls.append(argv)
        (out / "backbone.pth").write_text(str(len(calls)))
        return 0

    monkeypatch.setattr(study_mod, "invoke", fake_invoke)
    study = load_study()
    weights = study_mod.ensure_pretrained(study, "gn", tmp_path, log=lambda *a: None)
    assert study_mod.ensure_pretrained(study, "gn", tmp_path, log=lambda *a: None) == weights
    assert len(calls) == 1  # same arguments: reused
    study_mod.ensure_pretrained(study, "gn", tmp_path, extra_args="--max-steps 7",
                                log=lambda *a: None)  # fmt: skip
    last = len(calls[1]) - 1 - calls[1][::-1].index("--max-steps")
    assert len(calls) == 2 and calls[1][last + 1] == "7"  # extra flags come last: they win
    kept = [p for p in (tmp_path / "pretrain").iterdir() if p.name.startswith("gn.replaced-")]
    assert len(kept) == 1 and (kept[0] / "backbone.pth").read_text() == "1"
