"""DetnormModule: the optimizer recipe, plain hyperparameters that rebuild the model, and the
non-finite-loss stop that keeps the last good checkpoint."""

import pytest
import pytorch_lightning as pl
import torch
import yaml
from helpers.hparams import HP
from helpers.runs import tiny_args

from detnorm.cli.train import main
from detnorm.engine.module import DetnormModule
from detnorm.layers.norm import is_norm_module


@pytest.fixture(scope="module")
def module():
    return DetnormModule(**HP)


def test_optimizer_recipe(module):
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]
    assert isinstance(opt, torch.optim.SGD) and conf["lr_scheduler"]["interval"] == "step"
    assert opt.defaults["momentum"] == 0.9
    norm_ids = {id(p) for m in module.model.modules() if is_norm_module(m)
                for p in m.parameters(recurse=False)}  # fmt: skip
    seen = {}
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.02 * 4 / 16 * 0.001)  # warmup starts at 0.001 x LR
        for p in g["params"]:
            seen[id(p)] = g["weight_decay"]
    trainable = [p for p in module.model.parameters() if p.requires_grad]
    assert len(seen) == len(trainable)  # every trainable parameter exactly once
    assert any(id(p) in norm_ids for p in trainable)
    for p in trainable:
        assert seen[id(p)] == (0.0 if id(p) in norm_ids else 1e-4)
    # 2x at 4 images: 720k steps, decay at 480k and 640k, warmup 4000
    spec = module.schedule
    assert (spec.max_steps, spec.milestones, spec.warmup_iters) == (
        720_000,
        (480_000, 640_000),
        4000,
    )
    assert sched["scheduler"].lr_lambdas[0](480_000) == pytest.approx(0.1)


def test_frozen_stages_do_not_train(module):
    body = module.model.backbone.body
    assert not any(p.requires_grad for p in body.layer1.parameters())
    assert all(p.requires_grad for p in body.layer4.parameters())


def test_hparams_are_plain_and_rebuild_the_model(module, tmp_path):
    hp = dict(module.hparams)
    assert yaml.safe_load(yaml.safe_dump(hp)) == hp  # plain serializable values only
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hp,
                "pytorch-lightning_version": pl.__version__}, path)  # fmt: skip
    loaded = DetnormModule.load_from_checkpoint(path, map_location="cpu")
    assert loaded.norms == {
        "backbone": "frozen_bn",
        "fpn": "gn",
        "box_head": "gn",
        "mask_head": "gn",
    }
    assert loaded.label_to_cat_id == {1: 0, 2: 5, 3: 7}
    a, b = module.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_label_map_is_refused():
    with pytest.raises(ValueError, match="label_to_cat_id"):
        DetnormModule(**{**HP, "label_to_cat_id": {"0": 1, "1": 2, "2": 3}})


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(
    tiny_data,
    tmp_path,
    monkeypatch,
    capsys,
):
    import torchvision.models.detection.roi_heads as roi_heads

    orig, calls = roi_heads.fastrcnn_loss, []

    def poisoned(*args, **kwargs):  # the 3rd training step's box loss is NaN
        calls.append(1)
        cls_loss, box_loss = orig(*args, **kwargs)
        return cls_loss, box_loss * float("nan") if len(calls) == 3 else box_loss

    monkeypatch.setattr(roi_heads, "fastrcnn_loss", poisoned)
    out = tmp_path / "nan"
    argv = [*tiny_args(tiny_data), "--norm", "gn", "--max-steps", "4", "--checkpoint-period", "1",
            "--output-dir", str(out)]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "non-finite loss at step 3" in err and "loss_box_reg=nan" in err
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    assert all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )
    assert not (out / "checkpoints" / "step=000003.ckpt").exists()
    assert not (out / "metrics.json").exists()
