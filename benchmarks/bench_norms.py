"""Cost of each norm: training step time and peak memory, as ratios to frozen_bn.

    python benchmarks/bench_norms.py [--setting 512|800|embedded] [--rounds 3] [--batch-size 2]

Every norm gets the same architecture (ResNet FPN, 4conv1fc box head, 4-conv mask head), the
same seed and the same in-memory batches (several instances per image). frozen_bn is the BN*
layout (FrozenBN backbone, no norm in FPN and heads). Its frozen statistics are *calibrated*
first: a randomly initialized FrozenBN is an identity map, activations then grow through the
un-normalized ResNet, the RPN's boxes collapse onto the image border and NMS leaves a handful of
proposals, so the RoI heads would do a fraction of the work they do with pretrained statistics.
Calibration copies batch statistics of the same images into the FrozenBN buffers, as ImageNet
pretraining would. The FPN of the BN* layout has no norm, so the RPN's box regression starts at
zero in every arm (proposals = anchors ranked by objectness): each model then pools the full
RoI sample. The learning rate is 0 (SGD still does all its work: momentum, weight decay,
update): with random weights and no FPN norm, BN* diverges within a few steps at any useful
LR and its heads then pool fewer RoIs, so every round here measures the same networks. The
RoIs each arm's box and mask heads saw are reported to show equal work.

Step time: all norms built in one process, one step each per round, interleaved, medians.
Peak memory: a fresh subprocess per norm; peak RSS (``VmHWM``) after two training steps
minus RSS before the first one, i.e. activations, gradients, optimizer state and allocator
slack. tracemalloc does not see torch's allocations; torch.profiler's memory view on CPU
covers ATen tensors only, while RSS is what the machine must have.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    NORMS,
    build_model,
    fixed_batches,
    interleaved,
    machine,
    sgd,
    timed,
    to_device,
    train_step,
    write_result,
)


@torch.no_grad()
def calibrate_frozen_bn(model, setting: str, batches) -> None:
    """Set the FrozenBN statistics of ``model`` (norm frozen_bn) from a BN twin's batch stats."""
    twin = build_model(setting, "bn")
    body = twin.backbone.body.train()
    body.load_state_dict(model.backbone.body.state_dict())  # the same convolutions
    for m in body.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
    for images, _ in batches:
        body(model.transform(images)[0].tensors)
    own = model.backbone.body.state_dict()
    stats = {k: v for k, v in body.state_dict().items() if k in own and "num_batches" not in k}
    model.backbone.body.load_state_dict(stats, strict=False)


def prepared_model(setting: str, norm: str, batches, device: str, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(setting, norm)
    # an RPN that has not learned box shapes yet proposes its anchors: every model then keeps
    # enough proposals to pool the full RoI sample per image, as a trained model does
    torch.nn.init.zeros_(model.rpn.head.bbox_pred.weight)
    torch.nn.init.zeros_(model.rpn.head.bbox_pred.bias)
    if norm == "frozen_bn":
        calibrate_frozen_bn(model, setting, batches[:2])
    return model.to(device).train()


class RoICounter:
    """Counts the RoIs entering the box and mask heads (forward hooks)."""

    def __init__(self, model):
        self.box = self.mask = 0
        model.roi_heads.box_roi_pool.register_forward_hook(self._hook("box"))
        model.roi_heads.mask_roi_pool.register_forward_hook(self._hook("mask"))

    def _hook(self, name):
        def hook(module, inputs, output):
            setattr(self, name, getattr(self, name) + int(output.shape[0]))

        return hook


def step_times(setting, batch_size, rounds, device, norms=NORMS) -> dict:
    batches = [to_device(b, device) for b in fixed_batches(setting, 2, batch_size)]
    arms, counters = {}, {}
    for norm in norms:
        model = prepared_model(setting, norm, batches, device)
        opt = sgd(model, lr=0.0)  # see module doc: every round, same network
        counters[norm] = RoICounter(model)
        state = {"i": 0}

        def arm(model=model, opt=opt, state=state):
            batch = batches[state["i"] % len(batches)]
            state["i"] += 1
            torch.manual_seed(state["i"])
            return timed(lambda: train_step(model, opt, batch), device)

        arms[norm] = arm
    res = interleaved(arms, rounds=rounds)
    steps = rounds + 1
    for norm in norms:
        res[norm]["box_rois_per_step"] = counters[norm].box / steps
        res[norm]["mask_rois_per_step"] = counters[norm].mask / steps
    return res


def _status_kib(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, KiB. Not ``ru_maxrss``: that one
    is inherited from the parent across fork + exec, so a large parent would mask the child."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(setting, norm, batch_size, device) -> dict:
    batches = [to_device(b, device) for b in fixed_batches(setting, 2, batch_size)]
    model = prepared_model(setting, norm, batches, device)
    opt = sgd(model, lr=0.0)  # see module doc: every round, same network
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    before = _status_kib("VmRSS")
    for batch in batches:
        train_step(model, opt, batch)
    peak = _status_kib("VmHWM")
    out = {"rss_before_mib": before / 1024, "peak_rss_mib": peak / 1024,
           "peak_delta_mib": (peak - before) / 1024}  # fmt: skip
    if device.startswith("cuda"):
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def memory(setting, batch_size, device, threads, norms=NORMS) -> dict:
    out = {}
    for norm in norms:
        cmd = [sys.executable, __file__, "--memory-child", norm, "--setting", setting,
               "--batch-size", str(batch_size), "--device", device, "--threads", str(threads)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[norm] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def run(setting="512", batch_size=2, rounds=3, device="cpu", threads=1, norms=NORMS) -> dict:
    times = step_times(setting, batch_size, rounds, device, norms)
    mem = memory(setting, batch_size, device, threads, norms)
    base_t = times["frozen_bn"]["median_s"]
    base_m = mem["frozen_bn"]["peak_delta_mib"]
    rows = {}
    for norm in norms:
        rows[norm] = {
            "s_per_step": times[norm]["median_s"],
            "time_ratio": times[norm]["median_s"] / base_t,
            "peak_delta_mib": mem[norm]["peak_delta_mib"],
            "memory_ratio": mem[norm]["peak_delta_mib"] / base_m,
            "box_rois_per_step": times[norm]["box_rois_per_step"],
            "mask_rois_per_step": times[norm]["mask_rois_per_step"],
            "times_s": times[norm]["times_s"],
        }
    return {"machine": machine(device), "setting": setting, "batch_size": batch_size,
            "rounds": rounds, "norms": rows, "memory_raw": mem}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", default="512")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(args.setting, args.memory_child, args.batch_size,
                                      args.device)))  # fmt: skip
        return 0
    result = run(args.setting, args.batch_size, args.rounds, args.device, args.threads)
    for norm, row in result["norms"].items():
        print(f"{norm}: {row['s_per_step']:.3f} s/step ({row['time_ratio']:.3f}x), "
              f"+{row['peak_delta_mib']:.0f} MiB ({row['memory_ratio']:.2f}x), "
              f"RoIs box/mask {row['box_rois_per_step']:.0f}/{row['mask_rois_per_step']:.0f}")  # fmt: skip
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
