"""bf16-mixed on the CPU: norm statistics in fp32, one training step per norm close to fp32,
SyncBN's all-reduces in fp32 or wider, and a bf16 run through the CLI (training, PreciseBN,
evaluation, predictions.png) whose checkpoint tools/predict.py draws under bf16."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.distributed as dist
from helpers.dist_utils import run_distributed
from helpers.runs import tiny_args
from torch import nn

from detnorm.engine.precision import cpu_bf16_support
from detnorm.layers.norm import NORM_NAMES, batchnorm_modules
from detnorm.layers.sync_bn import SyncBatchNorm
from detnorm.modeling.maskrcnn import build_maskrcnn

BF16 = torch.bfloat16


def autocast(enabled: bool):
    return torch.autocast("cpu", dtype=BF16, enabled=enabled)


@pytest.mark.parametrize(
    "layer", [nn.BatchNorm2d(64), nn.GroupNorm(32, 64), nn.GroupNorm(1, 64), nn.GroupNorm(64, 64)]
)
def test_norm_statistics_are_fp32_under_autocast(layer):
    """Input with mean 100 and std 0.5: bf16 resolves 100 only to 0.5, so statistics computed
    in bf16 would be off by about one std; computed in fp32, only the output's rounding shows."""
    x = (torch.randn(2, 64, 16, 16) * 0.5 + 100).to(BF16)
    ref_layer = type(layer)(*_ctor_args(layer))
    ref = ref_layer(x.float())
    with autocast(True):
        y = layer(x)
    assert y.dtype == BF16
    torch.testing.assert_close(y.float(), ref, atol=0.02, rtol=0.01)  # bf16 output rounding
    if isinstance(layer, nn.BatchNorm2d):
        assert layer.running_mean.dtype == layer.running_var.dtype == torch.float32
        torch.testing.assert_close(layer.running_mean, ref_layer.running_mean, rtol=1e-4, atol=0)
        torch.testing.assert_close(layer.running_var, ref_layer.running_var, rtol=1e-3, atol=0)


def _ctor_args(layer):
    if isinstance(layer, nn.BatchNorm2d):
        return (layer.num_features,)
    return (layer.num_groups, layer.num_channels)


def _scene(seed=0):
    """2 images (3, 64, 80) with 2 instances each, and 32 fixed proposals per image (the
    ground-truth boxes jittered, plus random boxes), all float32, xyxy absolute pixels."""
    g = torch.Generator().manual_seed(seed)
    images, targets, proposals = [], [], []
    for _ in range(2):
        images.append(torch.rand(3, 64, 80, generator=g))
        masks = torch.zeros(2, 64, 80, dtype=torch.uint8)
        masks[0, 8:40, 10:30] = 1
        masks[1, 20:60, 40:75] = 1
        boxes = torch.tensor([[10.0, 8.0, 30.0, 40.0], [40.0, 20.0, 75.0, 60.0]])
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks})
        xy = torch.rand(30, 2, generator=g) * 50
        rand = torch.cat([xy, xy + 8 + torch.rand(30, 2, generator=g) * 25], 1)
        proposals.append(torch.cat([boxes + torch.randn(2, 4, generator=g) * 2, rand]))
    return images, targets, proposals


def _losses(model, images, targets, proposals, bf16: bool) -> dict:
    """Every training loss of ``model``; the RoI heads get the fixed ``proposals``, so fp32 and
    bf16 see the same RoIs (at initialization the RPN's ranking of near-equal scores, and with it
    the sampled RoIs, flips under any rounding)."""
    torch.manual_seed(1)  # the same anchor and RoI sampling in both precisions
    with autocast(bf16):
        batch, targets = model.transform(images, targets)
        features = model.backbone(batch.tensors)
        _, rpn = model.rpn(batch, features, targets)
        _, det = model.roi_heads(features, proposals, batch.image_sizes, targets)
    return {**rpn, **det}


@pytest.mark.parametrize("norm", NORM_NAMES)
def test_one_bf16_step_per_norm_is_finite_and_close_to_fp32(norm):
    images, targets, proposals = _scene()
    torch.manual_seed(0)
    model = build_maskrcnn(num_classes=3, depth=18, norm=norm, fpn_channels=32, box_fc_dim=64,
                           min_size=64, max_size=96, rpn_batch_size_per_image=32,
                           box_batch_size_per_image=16).train()  # fmt: skip
    start = {k: v.clone() for k, v in model.state_dict().items()}
    runs = {}
    for bf16 in (False, True):
        model.load_state_dict(start)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        first = _losses(model, images, targets, proposals, bf16)
        assert all(v.dtype == torch.float32 for v in first.values())  # losses stay fp32
        opt.zero_grad()
        sum(first.values()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        stats = [bn.running_var.clone() for bn in batchnorm_modules(model)]
        opt.step()
        after = _losses(model, images, targets, proposals, bf16)
        runs[bf16] = (first, grads, stats, after)
    (f32, g32, s32, a32), (f16, g16, s16, a16) = runs[False], runs[True]
    assert torch.isfinite(g16).all()
    for key in f32:  # every loss term before the step; measured here: within 0.6 %
        assert math.isfinite(float(f16[key]))
        assert float(f16[key]) == pytest.approx(float(f32[key]), rel=0.02, abs=1e-3), (norm, key)
    # after one SGD step from different rounding: the total within 1 % here (terms up to 6 %)
    total32, total16 = (float(sum(a.values())) for a in (a32, a16))
    assert math.isfinite(total16) and total16 == pytest.approx(total32, rel=0.03)
    assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) > 0.7  # same direction
    for ref, got in zip(s32, s16, strict=True):  # BN running statistics: fp32, close
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, ref, rtol=0.03, atol=1e-3)


def _sync_bn_bf16_worker(rank, world_size, xs, gs):
    dtypes = []
    all_reduce = dist.all_reduce

    def recording(tensor, *args, **kwargs):
        dtypes.append(tensor.dtype)
        return all_reduce(tensor, *args, **kwargs)

    dist.all_reduce = recording
    try:
        torch.manual_seed(0)
        m = SyncBatchNorm(4)
        x = xs[rank].clone().requires_grad_(True)
        with autocast(True):
            y = m(x)
        (y.float() * gs[rank]).sum().backward()
    finally:
        dist.all_reduce = all_reduce
    return {"y": y.detach(), "dx": x.grad, "rm": m.running_mean, "rv": m.running_var,
            "dtypes": dtypes}  # fmt: skip


def test_sync_bn_all_reduces_in_fp32_or_wider_under_bf16():
    """Two gloo ranks with bf16 inputs of different sizes against nn.BatchNorm2d in fp32 on the
    joined batch (the same bf16 values, upcast)."""
    g = torch.Generator().manual_seed(0)
    xs = [(torch.randn(n, 4, 5, 6, generator=g) * 3 + 5).to(BF16) for n in (2, 3)]
    gs = [torch.randn(n, 4, 5, 6, generator=g) for n in (2, 3)]
    results = run_distributed(_sync_bn_bf16_worker, 2, args=(xs, gs), timeout=60)
    joined = torch.cat([x.float().permute(1, 0, 2, 3).reshape(4, -1) for x in xs], 1)
    ref_bn = nn.BatchNorm2d(4)
    xj = joined[None, :, :, None].clone().requires_grad_(True)
    yj = ref_bn(xj)
    gj = torch.cat([gr.permute(1, 0, 2, 3).reshape(4, -1) for gr in gs], 1)[None, :, :, None]
    (yj * gj).sum().backward()
    offset = 0
    for rank, res in enumerate(results):
        assert res["dtypes"] and all(d in (torch.float32, torch.float64) for d in res["dtypes"])
        assert res["y"].dtype == BF16 and res["dx"].dtype == BF16
        n = xs[rank].numel() // 4
        shape = xs[rank].shape
        y_ref = yj[0, :, offset : offset + n, 0].reshape(4, shape[0], 5, 6).permute(1, 0, 2, 3)
        dx_ref = xj.grad[0, :, offset : offset + n, 0].reshape(4, shape[0], 5, 6)
        torch.testing.assert_close(res["y"].float(), y_ref, atol=0.03, rtol=0.01)
        torch.testing.assert_close(res["dx"].float(), dx_ref.permute(1, 0, 2, 3), atol=0.01,
                                   rtol=0.02)  # fmt: skip
        torch.testing.assert_close(res["rm"], ref_bn.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(res["rv"], ref_bn.running_var, rtol=1e-4, atol=1e-6)
        offset += n


def test_cpu_bf16_support_reads_the_flags():
    amx = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert cpu_bf16_support(amx) == "amx_bf16"
    assert cpu_bf16_support("flags : fpu avx512f avx512_bf16\n") == "avx512_bf16"
    assert cpu_bf16_support("flags : fpu avx2 avx512f\n") is None
    assert cpu_bf16_support("Features : fp asimd bf16\n") is None  # ARM: not these flags
    assert cpu_bf16_support() in (None, "amx_bf16", "avx512_bf16", "onednn_bf16")


def test_cpu_model_reads_the_model_name():
    from detnorm.engine.precision import cpu_model

    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t: fpu\n"
    assert cpu_model(text) == "AMD EPYC"
    assert cpu_model("processor : 0\nmodel name :   \n") is None  # blank: no model
    assert cpu_model("Features : fp asimd\n") is None


def test_bf16_run_precise_bn_eval_and_predict_through_the_cli(
    tiny_data,
    tmp_path,
    monkeypatch,
):
    from PIL import Image

    import detnorm.engine.precise_bn as precise_bn
    from detnorm.cli.predict import main as predict_main
    from detnorm.cli.train import main

    calls = []
    update = precise_bn.update_bn_stats

    def recording(model, batches, num_iters, forward):
        hook = model.register_forward_pre_hook(
            lambda module, args: calls.append(torch.is_autocast_enabled("cpu"))
        )
        try:
            return update(model, batches, num_iters, forward)
        finally:
            hook.remove()

    monkeypatch.setattr(precise_bn, "update_bn_stats", recording)
    out = tmp_path / "bf16"
    argv = [*tiny_args(tiny_data), "--norm", "bn", "--precision", "bf16-mixed",
            "--output-dir", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert calls == [True, True]  # PreciseBN: --precise-bn-iters 2 batches, under bf16 autocast
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(math.isfinite(metrics[t]["AP"]) for t in ("bbox", "segm"))
    assert (out / "predictions.png").is_file()
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    state = ckpt["state_dict"]
    bn_vars = [v for k, v in state.items() if k.endswith("running_var")]
    assert bn_vars and all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in bn_vars)
    images = tiny_data / "images" / "val"
    vis = tmp_path / "vis"
    code = predict_main(["--checkpoint", str(out / "checkpoints" / "last.ckpt"), str(images),
                         "--output-dir", str(vis), "--precision", "bf16-mixed",
                         "--score-threshold", "0", "--vis"])  # fmt: skip
    assert code == 0
    pngs = sorted(vis.rglob("*.png"))
    assert pngs
    with Image.open(pngs[0]) as im:
        assert min(im.size) >= 512  # 64 px images upscaled for readable labels
