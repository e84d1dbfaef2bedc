"""bf16 against fp32 on the CPU: training step time, side by side in one process.

    python benchmarks/bench_bf16.py [--settings embedded 512] [--norms gn frozen_bn] [--rounds 3]

Two settings: ``embedded``, the main job's (``detnorm.config.EMBEDDED_PRESET`` as it is at run
time: ResNet-18, its FPN/head widths, image scales and RPN/RoI sampling, batch 2, on the
embedded dataset), and ``512``, ResNet-50 FPN at 512 px with torchvision's default sampling.
For each norm, two copies of one network (same initialization, same in-memory batches, same
seeds) take a training step each per round, interleaved: one in fp32, one with the forward under
``torch.autocast("cpu", torch.bfloat16)``, which is what Lightning's ``--precision bf16-mixed``
does; the backward runs in the dtypes the forward chose. As in ``bench_norms.py``, the LR is 0
(SGD still does all its work), frozen_bn statistics are calibrated and the RPN starts from its
anchors, so every round measures the same networks and the RoI heads pool full samples; the
RoIs each arm pooled and its mean loss are reported to show the two arms did the same work.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_norms import RoICounter, prepared_model  # noqa: E402
from common import (  # noqa: E402
    SETTINGS,
    fixed_batches,
    interleaved,
    machine,
    sgd,
    timed,
    to_device,
    train_step,
    write_result,
)

from detnorm.engine.precision import cpu_bf16_support  # noqa: E402

ARMS = ("fp32", "bf16")


def step_times(setting: str, norm: str, batch_size: int, rounds: int) -> dict:
    """``{"fp32": {...}, "bf16": {...}}`` for one setting and norm (see module doc)."""
    batches = [to_device(b, "cpu") for b in fixed_batches(setting, 2, batch_size)]
    arms, counters, losses = {}, {}, {}
    for arm in ARMS:
        model = prepared_model(setting, norm, batches, "cpu")  # seed 0: identical copies
        opt = sgd(model, lr=0.0)
        counters[arm], losses[arm] = RoICounter(model), []
        state = {"i": 0}

        def run(model=model, opt=opt, state=state, bf16=arm == "bf16", out=losses[arm]):
            batch = batches[state["i"] % len(batches)]
            state["i"] += 1
            torch.manual_seed(state["i"])
            return timed(lambda: out.append(train_step(model, opt, batch, bf16)))

        arms[arm] = run
    res = interleaved(arms, rounds=rounds)
    steps = rounds + 1
    for arm in ARMS:
        res[arm].update(box_rois_per_step=counters[arm].box / steps,
                        mask_rois_per_step=counters[arm].mask / steps,
                        mean_loss=statistics.fmean(losses[arm]))  # fmt: skip
    res["speedup"] = res["fp32"]["median_s"] / res["bf16"]["median_s"]
    res["speedup_per_round"] = [a / b for a, b in zip(res["fp32"]["times_s"],
                                                      res["bf16"]["times_s"], strict=True)]  # fmt: skip
    return res


def run(settings=("embedded", "512"), norms=("gn", "frozen_bn"), batch_size=2, rounds=3) -> dict:
    out = {"machine": machine("cpu"), "cpu_bf16": cpu_bf16_support(), "batch_size": batch_size,
           "rounds": rounds, "settings": {}}  # fmt: skip
    for setting in settings:
        s = SETTINGS[setting]
        out["settings"][setting] = {
            "depth": s["depth"], "scales": list(s["scales"]), "max_size": s["max_size"],
            "model_kwargs": dict(s["model_kwargs"]),
            "norms": {norm: step_times(setting, norm, batch_size, rounds) for norm in norms},
        }  # fmt: skip
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", nargs="+", default=["embedded", "512"], choices=list(SETTINGS))
    p.add_argument("--norms", nargs="+", default=["gn", "frozen_bn"])
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run(tuple(args.settings), tuple(args.norms), args.batch_size, args.rounds)
    print(f"CPU bf16 support: {result['cpu_bf16'] or 'none'}")
    for setting, rows in result["settings"].items():
        for norm, r in rows["norms"].items():
            print(f"{setting} {norm}: fp32 {r['fp32']['median_s']:.3f} s/step, bf16 "
                  f"{r['bf16']['median_s']:.3f} s/step, speedup {r['speedup']:.2f}x")  # fmt: skip
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
