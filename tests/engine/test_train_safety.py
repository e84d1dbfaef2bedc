"""Training that cannot silently collapse: the warmup floor of compressed schedules, gradient
clipping against torch's clip_grad_norm_, the non-finite-loss message with its remedies, and the
predictions.png every run writes."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import yaml
from helpers.errors import raises_option
from helpers.runs import tiny_args
from PIL import Image

from detnorm.cli.train import main, parse_config
from detnorm.engine.build import module_hparams as module_kwargs
from detnorm.engine.module import DetnormModule
from detnorm.engine.prediction_grid import HEADER, PAD
from detnorm.engine.remedies import nonfinite_remedies, warmup_iters_for
from detnorm.solver.schedule import build_lr_scheduler, resolve_schedule, warmup_floor_steps


@pytest.mark.parametrize(
    "steps, floor", [(1, 0), (10, 5), (60, 30), (100, 50), (300, 50), (1000, 100), (9000, 900),
                     (20_000, 1000), (1_000_000, 1000)],
)  # fmt: skip
def test_warmup_floor_values(steps, floor):
    assert warmup_floor_steps(steps) == floor  # min(1000, max(50, ceil(10 %)), N // 2)


def test_compressed_schedule_keeps_the_floor():
    # batch 2: the 1x schedule is 720k steps with 8000 of warmup; 100 steps compress it to 1
    assert resolve_schedule("1x", 2, max_steps=100).warmup_iters == 1
    assert resolve_schedule("1x", 2, max_steps=100, warmup_floor=True).warmup_iters == 50
    assert resolve_schedule("1x", 16, max_steps=300, warmup_floor=True).warmup_iters == 50
    # 20k steps: compressed 8000 * 20000 / 720000 = 222; the floor is 1000
    assert resolve_schedule("1x", 2, max_steps=20_000, warmup_floor=True).warmup_iters == 1000
    # a scaled warmup above the floor is kept: 1x stretched to 180k steps at batch 16 -> 2000
    assert resolve_schedule("1x", 16, max_steps=180_000, warmup_floor=True).warmup_iters == 2000
    # the floor is capped by the uncompressed warmup: 3x at batch 16 in 135k steps -> 1000
    assert resolve_schedule("3x", 16, max_steps=135_000, warmup_floor=True).warmup_iters == 1000
    # never longer than the uncompressed warmup; warmup_iters=0 means none
    assert resolve_schedule("1x", 16, max_steps=100, warmup_iters=10, warmup_floor=True).warmup_iters == 10  # fmt: skip
    assert resolve_schedule("1x", 2, max_steps=100, warmup_iters=0, warmup_floor=True).warmup_iters == 0  # fmt: skip
    assert resolve_schedule("1x", 2, warmup_floor=True).warmup_iters == 8000  # not compressed


def test_lr_of_a_100_step_run_warms_up_for_50_steps():
    spec = resolve_schedule("1x", 2, max_steps=100, warmup_floor=True)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=spec.lr)
    sched = build_lr_scheduler(opt, spec)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    peak = 0.02 * 2 / 16
    for it in (0, 10, 25, 49):  # detectron2's linear warmup from 0.001
        assert lrs[it] == pytest.approx(peak * (0.001 + (1 - 0.001) * it / 50))
    assert lrs[50] == pytest.approx(peak) and lrs[66] == pytest.approx(peak)
    assert lrs[67] == pytest.approx(peak * 0.1)  # the first decay at 2/3 of the run


def _module_from_cli(argv):
    cfg = parse_config(argv)
    dm = SimpleNamespace(num_classes=3, label_to_cat_id={1: 1, 2: 2},
                         categories=[{"name": "a"}, {"name": "b"}])  # fmt: skip
    kwargs = module_kwargs(cfg, dm, cfg["batch_size"])
    kwargs["model_kwargs"].update(fpn_channels=32, box_fc_dim=64)
    return cfg, DetnormModule(**{**kwargs, "depth": 18})


def test_cli_100_step_run_has_the_floor_and_the_flag_turns_it_off():
    cfg, module = _module_from_cli(["--max-steps", "100", "--batch-size", "2"])
    assert cfg["warmup_floor"] is True
    assert module.schedule.warmup_iters >= warmup_floor_steps(100) == 50
    _, module = _module_from_cli(["--max-steps", "100", "--batch-size", "2", "--no-warmup-floor"])
    assert module.schedule.warmup_iters == 1


@pytest.mark.parametrize("value", [0, -1.0, "inf", "nan", True, "x"])
def test_bad_clip_grad_norm_names_the_option(value):
    from detnorm.config import DEFAULTS, validate

    cfg = {**DEFAULTS, "clip_grad_norm": float(value) if value in ("inf", "nan") else value}
    with raises_option("--clip-grad-norm"):
        validate(cfg)


def test_clip_grad_norm_clips_like_torch_and_the_run_draws_predictions(
    tiny_data,
    tmp_path,
    monkeypatch,
    capsys,
):
    """Gradients after Lightning's clipping equal torch.nn.utils.clip_grad_norm_ applied to the
    gradients before it; and the run ends with runs/<name>/predictions.png, its path printed."""
    before, after = [], []

    def grads(module):
        return [p.grad.detach().clone() for p in module.parameters() if p.grad is not None]

    monkeypatch.setattr(DetnormModule, "on_before_optimizer_step",
                        lambda self, optimizer: before.append(grads(self)), raising=False)  # fmt: skip
    monkeypatch.setattr(DetnormModule, "on_train_batch_end",
                        lambda self, *a, **k: after.append(grads(self)), raising=False)  # fmt: skip
    out = tmp_path / "clip"
    argv = [*tiny_args(tiny_data), "--norm", "gn", "--clip-grad-norm", "0.5",
            "--output-dir", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert len(before) == len(after) == 2
    for pre, post in zip(before, after, strict=True):
        total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in pre]))
        assert total > 0.5  # clipping had work to do
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in pre]
        for param, g in zip(params, pre, strict=True):
            param.grad = g.clone()
        torch.nn.utils.clip_grad_norm_(params, max_norm=0.5)
        for a, param in zip(post, params, strict=True):
            torch.testing.assert_close(a, param.grad, rtol=1e-5, atol=1e-8)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["clip_grad_norm"] == 0.5
    stdout = capsys.readouterr().out
    assert f"predictions: {out / 'predictions.png'}" in stdout
    val = json.loads((tiny_data / "annotations" / "val.json").read_text())["images"]
    assert len(val) == 2  # one row of 2 pairs; panels upscaled to a short side of >= 512
    sizes = [(im["height"], im["width"]) for im in val]
    factors = [math.ceil(512 / min(hw)) for hw in sizes]
    cell_h = max(h * f for (h, _), f in zip(sizes, factors, strict=True))
    cell_w = max(w * f for (_, w), f in zip(sizes, factors, strict=True))
    with Image.open(out / "predictions.png") as im:
        assert im.size == (PAD + 4 * (cell_w + PAD), PAD + HEADER + cell_h + PAD)


def test_non_finite_loss_names_the_remedies(tiny_data, tmp_path, capsys):
    """A BN* model (no norm in the FPN and heads) at an absurd LR blows up: exit 1, the step, one
    line per remedy, no traceback."""
    out = tmp_path / "boom"
    argv = [*tiny_args(tiny_data), "--norm", "frozen_bn", "--base-lr", "1e6", "--warmup-iters",
            "0", "--max-steps", "6", "--output-dir", str(out)]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    (first,) = [i for i, line in enumerate(lines) if line.startswith("detnorm-train:")]
    lines = lines[first:]
    assert lines[0].startswith("detnorm-train: stopped: non-finite loss at step ")
    assert lines[1] == "to try:"
    remedies = lines[2:]
    assert len(remedies) == 4 and all(r.startswith("  - ") for r in remedies)
    assert "--base-lr 250000" in remedies[0]  # a quarter of 1e6
    assert "a longer warmup (now 0 of 6 steps)" in remedies[1] and "--warmup-iters" in remedies[1]
    assert "--clip-grad-norm" in remedies[2]
    assert remedies[3].endswith("--fpn-norm gn --box-head-norm gn --mask-head-norm gn")


def test_remedies_that_apply():
    hp = {"base_lr": 0.02, "total_batch_size": 2, "schedule": "1x", "max_steps": 300,
          "warmup_iters": 1000, "warmup_floor": True}  # fmt: skip
    spec = resolve_schedule("1x", 2, max_steps=300, warmup_floor=True)  # warmup 50 of 300
    gn = dict.fromkeys(("backbone", "fpn", "box_head", "mask_head"), "gn")
    lines = nonfinite_remedies(hp, spec, gn, 2.0)
    assert len(lines) == 3 and "a lower --clip-grad-norm (now 2)" in lines[2]  # no GN line
    assert "now 50 of 300 steps" in lines[1] and "(100 steps)" in lines[1]
    lines = nonfinite_remedies(hp, spec, {**gn, "box_head": "none"}, None)
    assert lines[-1].endswith(": --box-head-norm gn")
    spec = resolve_schedule("1x", 2, max_steps=100, warmup_floor=True)  # 50 of 100: enough
    assert not any("warmup" in line for line in nonfinite_remedies(hp, spec, gn, None))


@pytest.mark.parametrize("steps, max_steps, floor", [(100, 300, True), (30, 100, False),
                                                     (3000, 20_000, True)])  # fmt: skip
def test_warmup_iters_for_is_the_smallest_that_reaches_the_target(steps, max_steps, floor):
    hp = {"schedule": "1x", "total_batch_size": 2, "max_steps": max_steps, "warmup_floor": floor}
    iters = warmup_iters_for(steps, hp)

    def resolved(n):
        return resolve_schedule("1x", 2, max_steps=max_steps, warmup_iters=n,
                                warmup_floor=floor).warmup_iters  # fmt: skip

    assert resolved(iters) >= steps > resolved(iters - 1)
    assert math.isclose(iters, steps * 720_000 / max_steps / 8, rel_tol=0.05)
