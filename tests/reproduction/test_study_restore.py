"""The committed runs (``docs/study/runs.json``, ``backbones.json``) restored into a runs
folder: the same results, curves and report as the folder they came from."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from helpers.study_runs import write_run as _run  # noqa: E402

from reproduction.cli import main  # noqa: E402
from reproduction.curves import read_curve  # noqa: E402
from reproduction.report import collect  # noqa: E402
from reproduction.runner import finished, load_study, run_dir  # noqa: E402


def test_committed_runs_restore_into_an_empty_root(tmp_path):
    """The report's records (``runs.json``, ``backbones.json``) written from one root, restored
    into an empty one, give the same tables, curves and report; a local run wins over them."""
    from reproduction.restore import backbone_records, restore, run_records

    study = load_study()
    a, b, docs = tmp_path / "a", tmp_path / "b", tmp_path / "docs"
    seed = study.curve["seeds"][0]
    _run(a, study, "batch_sweep/gn_b2", seed, 30.0, 28.0, seconds=321.0,
         curve=[(250, 10.0, 9.0), (500, 25.0, 22.0), (750, 29.0, 27.0), (1000, 30.0, 28.0)])  # fmt: skip
    _run(a, study, "batch_sweep/gn_b2", 1, 32.0, 29.5, seconds=300.0)
    _run(a, study, "batch_sweep/bn_b8", 2, 11.0, 12.0, seconds=90.0)
    meta = a / "pretrain" / "gn" / "backbone.pth.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(
        json.dumps({"norm": "gn", "steps": 1200, "train_seconds": 1003.0, "top1": 99.2})
    )
    docs.mkdir()
    (docs / "runs.json").write_text(json.dumps(run_records(study, a)))
    (docs / "backbones.json").write_text(json.dumps(backbone_records(study, a)))
    assert json.loads((docs / "backbones.json").read_text())[0]["name"] == "gn"

    assert restore(study, b, docs) == 3
    assert restore(study, b, docs) == 0  # already there
    ra, rb = collect(study, a), collect(study, b)
    assert {k: (v.values, v.seconds) for k, v in ra.items()} == {
        k: (v.values, v.seconds) for k, v in rb.items()
    }
    cell = study.cell("batch_sweep/gn_b2")
    assert finished(study, cell, 1, b) is not None
    assert read_curve(run_dir(b, cell, seed)) == read_curve(run_dir(a, cell, seed))
    assert json.loads((b / "pretrain" / "gn" / "backbone.pth.json").read_text())["top1"] == 99.2
    outs = []
    for root in (a, b):
        out = tmp_path / root.name / "REPRODUCTION.md"
        assert main(["--no-restore", "--root", str(root), "report", "--output", str(out)]) == 0
        outs.append(out.read_text().replace(str(root), "ROOT"))
    assert outs[0] == outs[1]

    c = tmp_path / "c"  # a finished local run is kept, not overwritten by the committed one
    _run(c, study, "batch_sweep/bn_b8", 2, 15.0)
    stale = run_dir(c, study.cell("batch_sweep/gn_b2"), seed)  # an unfinished one is replaced
    stale.mkdir(parents=True)
    (stale / "metrics.csv").write_text("step,val/bbox_AP\n0,1.0\n")
    assert restore(study, c, docs) == 2
    assert collect(study, c)["batch_sweep/bn_b8"].values["bbox"] == [15.0]
    assert read_curve(stale) == read_curve(run_dir(a, cell, seed))


def test_a_backbone_pretrained_again_keeps_the_one_earlier_runs_used(tmp_path):
    """Pretraining a backbone again (on another CPU the weights differ) keeps the committed
    record, marked replaced, in ``backbones.json``; the report names which runs fine-tuned which
    pretraining, and a restore puts back only the current one."""
    from reproduction.restore import restore

    study = load_study()
    root, out = tmp_path / "runs", tmp_path / "REPRODUCTION.md"
    docs = tmp_path / "docs" / "study"
    docs.mkdir(parents=True)
    old = {"name": "bn", "norm": "bn", "steps": 1200, "train_seconds": 1230.0, "top1": 91.4}
    (docs / "backbones.json").write_text(json.dumps([old]))
    d0 = _run(root, study, "placement/bn_star_2fc_12x", 0, 30.0)  # before backbone records
    d1 = _run(root, study, "placement/bn_star_2fc_12x", 1, 31.0)
    new = {"name": "bn", "sha256": "ab12cd34ef56ab78", "top1": 93.8}
    for d, cpu in ((d0, "CPU A"), (d1, "CPU B")):
        rec = json.loads((d / "study.json").read_text()) | {"machine": {"cpu_model": cpu}}
        (d / "study.json").write_text(
            json.dumps(rec | ({"backbone": new} if cpu == "CPU B" else {}))
        )
    pre = root / "pretrain" / "bn"
    pre.mkdir(parents=True)
    (pre / "backbone.pth.json").write_text(json.dumps({k: v for k, v in old.items() if k != "name"}
                                                      | {"train_seconds": 745.0, "top1": 93.8}))  # fmt: skip
    (pre / "study_pretrain.json").write_text(json.dumps(
        {"args": [], "sha256": new["sha256"], "machine": {"cpu_model": "CPU B"}, "date": "2026-12-04"}))  # fmt: skip
    argv = ["--no-restore", "--root", str(root), "report", "--output", str(out)]
    assert main(argv) == 0
    kept = json.loads((docs / "backbones.json").read_text())
    assert [(b["top1"], b.get("replaced", False), b.get("sha256")) for b in kept] == [
        (91.4, True, None), (93.8, False, new["sha256"])]  # fmt: skip
    lines = [line for line in out.read_text().splitlines() if "Pretrained `bn`" in line]
    assert len(lines) == 2
    assert "91.4 %" in lines[0] and "1 run: placement/bn_star_2fc_12x seed 0" in lines[0]
    assert "CPU B, 2026-12-04, weights ab12cd34" in lines[1]
    assert "93.8 %" in lines[1] and "1 run: placement/bn_star_2fc_12x seed 1" in lines[1]
    row = next(
        x for x in out.read_text().splitlines() if x.startswith("| placement/bn_star_2fc_12x | 2 |")
    )
    assert row.endswith("(runs per CPU: CPU A 1; CPU B 1) |")  # the wall-time table
    assert main(argv) == 0  # a second report keeps both, once each
    assert json.loads((docs / "backbones.json").read_text()) == kept
    assert restore(study, tmp_path / "b", docs) == 2
    restored = json.loads((tmp_path / "b" / "pretrain" / "bn" / "backbone.pth.json").read_text())
    assert restored["top1"] == 93.8 and restored["sha256"] == new["sha256"]
    rec = json.loads(
        (
            run_dir(tmp_path / "b", study.cell("placement/bn_star_2fc_12x"), 1) / "study.json"
        ).read_text()
    )
    assert rec["backbone"] == new


def test_only_partial_curves_keep_the_drawn_plot(tmp_path):
    """A family whose curves were restored without mask AP keeps its committed curve PNG (and
    its plateau sentence); a full curve redraws it."""
    study = load_study()
    seed = study.curve["seeds"][0]
    d = _run(tmp_path / "runs", study, "groups/ln", seed, 30.0)
    from reproduction.restore import write_curve_csv

    write_curve_csv(d / "metrics.csv", [{"step": 750, "bbox": 26.2, "segm": None},
                                        {"step": 1000, "bbox": 30.0, "segm": None}])  # fmt: skip
    png = tmp_path / "docs" / "study" / "groups_curves.png"
    png.parent.mkdir(parents=True)
    png.write_bytes(b"drawn from the full curves")
    out = tmp_path / "REPRODUCTION.md"
    args = ["--no-restore", "--root", str(tmp_path / "runs"), "report", "--output", str(out)]
    assert main(args) == 0
    assert png.read_bytes() == b"drawn from the full curves"
    text = out.read_text()
    assert "](docs/study/groups_curves.png)" in text and "G=1 (LN) +3.8 (750→1000)" in text
    write_curve_csv(d / "metrics.csv", [{"step": 750, "bbox": 26.2, "segm": 20.0},
                                        {"step": 1000, "bbox": 30.0, "segm": 24.0}])  # fmt: skip
    assert main(args) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bad_committed_record_names_the_file_and_record(tmp_path):
    from reproduction.restore import restore

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "runs.json").write_text(json.dumps([{"cell": "batch_sweep/gn_b2", "seed": 0}]))
    with pytest.raises(ValueError, match=r"runs\.json: record 0 \(batch_sweep/gn_b2 seed 0\)"):
        restore(load_study(), tmp_path / "runs", docs)
    (docs / "runs.json").write_text("{")
    with pytest.raises(ValueError, match="runs.json"):
        restore(load_study(), tmp_path / "runs", docs)


@pytest.mark.skipif(sys.platform == "win32", reason="the restore lock is POSIX flock")
def test_restore_waits_for_another_process_restoring_the_same_root(tmp_path):
    """Two study commands started at once on one empty root must not restore it together (one
    removes a run folder that the other is writing): while another process holds
    ``<root>/.restore.lock``, :func:`restore` writes nothing, and it finishes once the lock is
    released."""
    import subprocess
    import threading

    from reproduction.restore import restore, run_records

    study = load_study()
    a, b, docs = tmp_path / "a", tmp_path / "b", tmp_path / "docs"
    _run(a, study, "batch_sweep/gn_b2", 1, 32.0, 29.5, seconds=300.0)
    docs.mkdir()
    (docs / "runs.json").write_text(json.dumps(run_records(study, a)))
    b.mkdir()
    holder = subprocess.Popen(  # another process holding the lock
        [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()",
         str(b / ".restore.lock")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        result = []
        t = threading.Thread(target=lambda: result.append(restore(study, b, docs)))
        t.start()
        t.join(1.0)
        assert t.is_alive() and not result
        assert finished(study, study.cell("batch_sweep/gn_b2"), 1, b) is None
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    t.join(30)
    assert result == [1]
    assert finished(study, study.cell("batch_sweep/gn_b2"), 1, b) is not None
