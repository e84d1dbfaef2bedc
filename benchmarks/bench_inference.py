"""Inference latency per image at the test size, per norm.

    python benchmarks/bench_inference.py [--setting 800|512|embedded] [--rounds 3]

One image per call (as detnorm evaluates), ``torch.inference_mode``, the model's own eval path
(resize to the test size, RPN, box and mask heads, pasting masks back to the original image).
Models are randomly initialized with the architecture of ``bench_norms`` (4conv1fc box head);
running statistics are calibrated on training images first (FrozenBN as in ``bench_norms``, BN
by a no-grad pass in train mode), so the RPN and the heads see realistic activations. The
detection count per image is reported since mask pasting scales with it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.nn.modules.batchnorm import _BatchNorm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_norms import prepared_model  # noqa: E402
from common import NORMS, datamodule, fixed_batches, interleaved, machine, timed, write_result  # noqa: E402


@torch.no_grad()
def calibrate_bn(model, batches) -> None:
    """Running statistics = average batch statistics over ``batches`` (train-mode passes)."""
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not bns:
        return
    for m in bns:
        m.momentum = None
        m.reset_running_stats()
    model.train()
    for images, targets in batches:
        model(images, targets)


def run(setting="800", rounds=3, device="cpu", norms=NORMS, images=2) -> dict:
    batches = fixed_batches(setting, 2)
    val = datamodule(setting).val_set
    inputs = [val[i][0].to(device) for i in range(images)]
    arms, dets = {}, {}
    for norm in norms:
        model = prepared_model(setting, norm, batches, device)
        calibrate_bn(model, batches)
        model.eval()
        state = {"i": 0}
        dets[norm] = []

        def arm(model=model, state=state, out=dets[norm]):
            image = inputs[state["i"] % len(inputs)]
            state["i"] += 1

            def go():
                with torch.inference_mode():
                    out.append(len(model([image])[0]["scores"]))

            return timed(go, device)

        arms[norm] = arm
    res = interleaved(arms, rounds=rounds * len(inputs))
    base = res["frozen_bn"]["median_s"]
    rows = {n: {"s_per_image": res[n]["median_s"], "ratio": res[n]["median_s"] / base,
                "detections_per_image": sum(dets[n]) / len(dets[n]), "times_s": res[n]["times_s"]}
            for n in norms}  # fmt: skip
    shape = tuple(inputs[0].shape[1:])
    return {"machine": machine(device), "setting": setting, "image_hw": shape, "norms": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", default="800")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run(args.setting, args.rounds, args.device)
    for norm, row in result["norms"].items():
        print(f"{norm}: {row['s_per_image'] * 1000:.0f} ms/image ({row['ratio']:.3f}x), "
              f"{row['detections_per_image']:.0f} detections")  # fmt: skip
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
