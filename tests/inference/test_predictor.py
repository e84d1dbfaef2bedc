"""detnorm.Predictor: every input kind gives the same result, equal to training-time evaluation."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from helpers.predict_helpers import save_checkpoint, tiny_dataset, tiny_module
from PIL import Image

from detnorm import Prediction, Predictor
from detnorm.data.image_io import read_image


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint, its dataset, and the checkpoint's training-time evaluation (Trainer.validate)."""
    from detnorm.cli.eval import main as eval_main

    root = tmp_path_factory.mktemp("predictor")
    data = tiny_dataset(root / "data")
    ckpt = save_checkpoint(tiny_module("gn"), root / "tiny.ckpt")
    evaluated = root / "eval"
    assert eval_main(["--checkpoint", str(ckpt), "--data", str(data),
                      "--output-dir", str(evaluated)]) == 0  # fmt: skip
    # A second ground truth made of some of the model's own detections (ranks 1 and 3 of each
    # image), so that the round trip below compares AP values that are neither 0 nor 100.
    gt_data = root / "gt"
    shutil.copytree(data / "images", gt_data / "images")
    (gt_data / "annotations").mkdir()
    coco = json.loads((data / "annotations" / "val.json").read_text())
    boxes = json.loads((evaluated / "results_bbox.json").read_text())
    segms = json.loads((evaluated / "results_segm.json").read_text())
    coco["annotations"] = []
    for img in coco["images"]:
        dets = [(b, s) for b, s in zip(boxes, segms, strict=True) if b["image_id"] == img["id"]]
        for b, s in dets[1:4:2]:
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": img["id"], "iscrowd": 0,
                "category_id": b["category_id"], "bbox": b["bbox"],
                "segmentation": s["segmentation"], "area": float(mask_util.area(s["segmentation"])),
            })  # fmt: skip
    for split in ("train", "val"):
        (gt_data / "annotations" / f"{split}.json").write_text(json.dumps(coco))
    gt_eval = root / "gt_eval"
    assert eval_main(["--checkpoint", str(ckpt), "--data", str(gt_data),
                      "--output-dir", str(gt_eval)]) == 0  # fmt: skip
    return {"root": root, "data": data, "ckpt": ckpt, "eval": evaluated, "gt_data": gt_data,
            "gt_eval": gt_eval}  # fmt: skip


def _val_images(data):
    coco = json.loads((data / "annotations" / "val.json").read_text())
    return [(img["id"], data / "images" / img["file_name"]) for img in coco["images"]]


def _same(a: Prediction, b: Prediction) -> None:
    """Bit-identical: the same image through the same batch shape."""
    for key in ("boxes", "scores", "labels", "masks"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    assert a.category_ids == b.category_ids and a.category_names == b.category_names


def _close(a: Prediction, b: Prediction) -> None:
    """Equal up to float rounding: a batch of 2-4 runs other conv kernels than a batch of 1."""
    assert torch.equal(a.labels, b.labels) and a.category_ids == b.category_ids
    torch.testing.assert_close(a.boxes, b.boxes, atol=1e-3, rtol=0)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=0)
    inter = (a.masks & b.masks).flatten(1).sum(1)
    union = (a.masks | b.masks).flatten(1).sum(1).clamp(min=1)
    assert torch.all(inter / union >= 0.99)


def test_paths_arrays_pil_and_tensors_agree(trained):
    predictor = Predictor.from_checkpoint(trained["ckpt"], score_threshold=0.0)
    paths = [p for _, p in _val_images(trained["data"])]
    arrays = [read_image(p) for p in paths]
    by_path = predictor([str(p) for p in paths])
    assert len(by_path) == 3 and all(len(p) > 0 for p in by_path)
    kinds = {
        "Path": paths,
        "numpy": arrays,
        "PIL": [Image.fromarray(a) for a in arrays],
        "uint8 tensor": [torch.from_numpy(a).permute(2, 0, 1) for a in arrays],
        "float tensor": [torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in arrays],
    }
    for kind, items in kinds.items():
        got = predictor(items)
        for a, b in zip(by_path, got, strict=True):
            if kind == "float tensor":  # x / 255 is not bit-identical to x * float32(1 / 255)
                torch.testing.assert_close(a.boxes, b.boxes, atol=1e-3, rtol=0)
                torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=0)
            else:
                _same(a, b)
    single = predictor(arrays[0])
    assert isinstance(single, Prediction)
    _close(single, by_path[0])
    p = by_path[0]
    h, w = arrays[0].shape[:2]
    assert (
        p.image_size == (h, w) and p.masks.shape == (len(p), h, w) and p.masks.dtype == torch.bool
    )
    assert set(p.category_ids) <= {5, 7}
    assert p.category_names == [{5: "disc", 7: "bar"}[c] for c in p.category_ids]
    assert torch.all(p.scores[:-1] >= p.scores[1:])


def test_matches_the_training_time_evaluation(trained):
    """to_coco of each image equals results_{bbox,segm}.json that Trainer.validate wrote."""
    predictor = Predictor.from_checkpoint(trained["ckpt"], score_threshold=0.0, batch_size=2)
    images = _val_images(trained["data"])
    predictions = predictor([p for _, p in images])  # all three are 72x56: one batch of 2, one of 1
    for iou_type in ("bbox", "segm"):
        expected = json.loads((trained["eval"] / f"results_{iou_type}.json").read_text())
        got = [
            r for (i, _), p in zip(images, predictions, strict=True) for r in p.to_coco(i)[iou_type]
        ]
        assert len(got) == len(expected) > 0
        for a, b in zip(sorted(got, key=_key), sorted(expected, key=_key), strict=True):
            assert a["image_id"] == b["image_id"] and a["category_id"] == b["category_id"]
            assert a["score"] == pytest.approx(b["score"], abs=1e-5)
            if iou_type == "bbox":
                assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-3)
            else:  # same mask up to pixels within float rounding of the 0.5 threshold
                ma, mb = (mask_util.decode(r["segmentation"]).astype(bool) for r in (a, b))
                assert (ma & mb).sum() >= 0.99 * max(1, (ma | mb).sum())


def _key(r):
    return (r["image_id"], -round(r["score"], 4), r["category_id"])


def test_score_threshold_batches_and_sizes(trained):
    predictor = Predictor.from_checkpoint(trained["ckpt"], score_threshold=0.0, batch_size=3)
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in
              ((56, 72), (40, 64), (56, 72), (64, 48))]  # fmt: skip
    batched = predictor(arrays)
    for a, arr in zip(batched, arrays, strict=True):
        _close(a, predictor(arr))  # one at a time: the same, whatever else was in the call
        assert a.image_size == arr.shape[:2]
    single = predictor(arrays[1])
    strict = Predictor(predictor.model, predictor.label_to_cat_id, predictor.category_names,
                       score_threshold=float(single.scores.median()))  # fmt: skip
    kept = strict(arrays[1])
    assert 0 < len(kept) < len(single)
    assert torch.equal(kept.scores, single.scores[single.scores >= strict.score_threshold])


def test_gray_rgba_and_16_bit_read_as_the_loader_does(trained, tmp_path):
    predictor = Predictor.from_checkpoint(trained["ckpt"], score_threshold=0.0)
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (56, 72), dtype=np.uint8)
    rgb = rng.integers(0, 256, (56, 72, 3), dtype=np.uint8)
    deep = rng.integers(100, 4000, (56, 72), dtype=np.uint16)  # 12-bit data in 16 bits
    rgba = np.concatenate([rgb, rng.integers(0, 256, (56, 72, 1), dtype=np.uint8)], axis=2)
    stretched = np.round((deep - deep.min()) * (255.0 / (deep.max() - deep.min())))
    cases = {  # input -> the RGB uint8 image it must behave as, computed here
        "gray": (gray, np.repeat(gray[:, :, None], 3, axis=2)),
        "rgba": (rgba, rgb),
        "16-bit": (deep, np.repeat(stretched.astype(np.uint8)[:, :, None], 3, axis=2)),
    }
    for name, (array, expected) in cases.items():
        reference = predictor(expected)
        path = tmp_path / f"{name}.png"
        Image.fromarray(array).save(path)
        with Image.open(path) as im:
            from_pil = predictor(im)
        for got in (predictor(array), predictor(path), from_pil):
            _same(got, reference)


def test_bad_inputs_name_the_problem(trained, tmp_path):
    predictor = Predictor.from_checkpoint(trained["ckpt"])
    with pytest.raises(ValueError, match=r"\(3, H, W\) RGB, got shape \(1, 8, 8\)"):
        predictor(torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="cannot read dict as an image"):
        predictor({"not": "an image"})
    with pytest.raises(OSError, match="missing.png"):
        predictor(tmp_path / "missing.png")
    torch.save({"conv1.weight": torch.zeros(1), "layer1.0.bn1.weight": torch.ones(1)},
               tmp_path / "other.pth")  # fmt: skip
    with pytest.raises(ValueError, match="other.pth.*not a detnorm checkpoint"):
        Predictor.from_checkpoint(tmp_path / "other.pth")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a detnorm checkpoint.*junk.ckpt"):
        Predictor.from_checkpoint(tmp_path / "junk.ckpt")
    with pytest.raises(ValueError, match="precision"):
        Predictor.from_checkpoint(trained["ckpt"], precision="fp8")


def test_bf16_autocast_runs(trained):
    predictor = Predictor.from_checkpoint(trained["ckpt"], score_threshold=0.0,
                                          precision="bf16-mixed")  # fmt: skip
    p = predictor(read_image(_val_images(trained["data"])[0][1]))
    assert p.boxes.dtype == torch.float32 and len(p) > 0


def test_predict_json_then_eval_gives_the_training_time_ap(trained, tmp_path, capsys):
    """tools/predict.py --ann GT -> predictions_*.json -> tools/eval.py: the AP of Trainer.validate."""
    from detnorm.cli.eval import main as eval_main
    from detnorm.cli.predict import main as predict_main

    gt = trained["gt_data"] / "annotations" / "val.json"
    out = tmp_path / "pred"
    assert predict_main(["--checkpoint", str(trained["ckpt"]), "--ann", str(gt), "--output-dir",
                         str(out), "--score-threshold", "0", "--batch-size", "1"]) == 0  # fmt: skip
    assert not list(out.glob("*.png"))
    images = json.loads((out / "images.json").read_text())
    assert [i["id"] for i in images] == [i["id"] for i in json.loads(gt.read_text())["images"]]
    expected = json.loads((trained["gt_eval"] / "metrics.json").read_text())
    for iou_type in ("bbox", "segm"):
        scored = tmp_path / iou_type
        results = out / f"predictions_{iou_type}.json"
        assert eval_main(["--ann", str(gt), "--results", str(results), "--iou-types", iou_type,
                          "--output-dir", str(scored)]) == 0  # fmt: skip
        got = json.loads((scored / "metrics.json").read_text())[iou_type]
        assert 0 < got["AP"] < 100
        for stat, value in expected[iou_type].items():
            if stat != "per_category":
                assert got[stat] == pytest.approx(value, abs=1e-9), (iou_type, stat)


def test_predict_cli_errors_are_one_line(trained, tmp_path, capsys):
    from detnorm.cli.predict import main as predict_main

    ckpt = str(trained["ckpt"])
    ann = trained["gt_data"] / "annotations" / "val.json"
    bad = json.loads(ann.read_text())
    bad["images"][1]["file_name"] = "val/missing.jpg"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    cases = [
        (["--ann", str(tmp_path / "bad.json"), "--images", str(trained["gt_data"] / "images")],
         f"image id {bad['images'][1]['id']}: file .*missing.jpg does not exist"),
        (["--ann", str(tmp_path / "bad.json")], "--images: required with --ann"),
        (["--ann", str(ann), "--images", str(tmp_path / "nowhere")], "--images: folder not found"),
        (["--ann", str(tmp_path / "nope.json")], "--ann: .*nope.json"),
    ]  # fmt: skip
    for args, message in cases:
        assert predict_main(["--checkpoint", ckpt, *args, "--output-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(message, err), err
    with pytest.raises(SystemExit):  # neither images nor --ann
        predict_main(["--checkpoint", ckpt, "--output-dir", str(tmp_path)])
    assert "one of the two" in capsys.readouterr().err
