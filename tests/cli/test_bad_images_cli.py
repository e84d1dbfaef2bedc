"""Bad image files through ``tools/train.py`` and ``tools/eval.py``: unreadable files stop the run
before step 1 with one summary (or are skipped with --skip-bad-images); files that fail only at
decode time never stop it: training replaces them, evaluation scores them as images with no
detections, and says so."""

import json
import logging
import shutil

import pytest
from helpers.runs import tiny_args

from detnorm.cli.train import main

pytestmark = pytest.mark.bad_input


def _copy(tiny_data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    return root, {s: json.loads((root / "annotations" / f"{s}.json").read_text())
                  for s in ("train", "val")}  # fmt: skip


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_unreadable_images_stop_before_step_1_in_one_summary(tiny_data, tmp_path, capsys):
    root, ann = _copy(tiny_data, tmp_path)
    first, second = ann["train"]["images"][:2]
    (root / "images" / first["file_name"]).write_bytes(b"")
    (root / "images" / second["file_name"]).write_text("not an image")
    out = tmp_path / "run"
    argv = [*tiny_args(root), "--norm", "gn", "--output-dir", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("detnorm-train: error: --data: ") and "2 of 4 train images" in err[0]
    assert "--skip-bad-images" in err[0]
    assert err[1:] == [
        f"  image id {first['id']}: {root / 'images' / first['file_name']}: empty file",
        f"  image id {second['id']}: {root / 'images' / second['file_name']}: not an image PIL "
        "can identify",
    ]
    assert not (out / "checkpoints").exists()
    assert main([*argv, "--skip-bad-images"]) == 0  # dropped, counted, and the run goes on
    assert json.loads((out / "metrics.json").read_text())["step"] == 2


def test_decode_failures_never_stop_a_run(tiny_data, tmp_path, capsys, caplog):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    root, ann = _copy(tiny_data, tmp_path)
    train = ann["train"]["images"]
    group = [im for im in train if im["width"] >= im["height"]]
    group = group if len(group) > 1 else [im for im in train if im["width"] < im["height"]]
    _truncate(root / "images" / group[0]["file_name"])  # passes the header check
    bad_val = ann["val"]["images"][1]
    _truncate(root / "images" / bad_val["file_name"])
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="detnorm.data"):
        assert main([*tiny_args(root), "--norm", "gn", "--output-dir", str(out)]) == 0
    stdout = capsys.readouterr().out
    replaced = [r.getMessage() for r in caplog.records if "failed to decode" in r.getMessage()]
    assert replaced and f"id {group[0]['id']}: " in replaced[0]
    assert "same aspect group" in replaced[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["unreadable_images"] == [bad_val["id"]]
    assert "1 evaluation image(s) could not be read and count as images with no detections" in (
        stdout
    )
    # the skipped image has no detections, and the AP is pycocotools' on the same results
    gt = COCO(str(root / "annotations" / "val.json"))
    for iou_type in ("bbox", "segm"):
        results = json.loads((out / f"results_{iou_type}.json").read_text())
        assert results and all(r["image_id"] != bad_val["id"] for r in results)
        ev = COCOeval(gt, gt.loadRes(results), iou_type)
        ev.evaluate(), ev.accumulate(), ev.summarize()
        assert metrics[iou_type]["AP"] == pytest.approx(100 * ev.stats[0], abs=1e-9)


def test_eval_checkpoint_counts_an_undecodable_image(gn_run, tiny_data, tmp_path, capsys):
    from detnorm.cli.eval import main as eval_main

    root, ann = _copy(tiny_data, tmp_path)
    bad_val = ann["val"]["images"][0]
    _truncate(root / "images" / bad_val["file_name"])
    ckpt = gn_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "eval"
    assert (
        eval_main(["--checkpoint", str(ckpt), "--data", str(root), "--output-dir", str(out)]) == 0
    )
    assert "count as images with no detections" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["unreadable_images"] == [bad_val["id"]]
