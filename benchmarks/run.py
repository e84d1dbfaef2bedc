"""Run every benchmark and write ``BENCHMARKS.md`` and ``benchmarks/results.json``.

    python benchmarks/run.py            # full: about 15-20 min on a 2-core CPU
    python benchmarks/run.py --quick    # smoke: small settings, under about 3 min
    python benchmarks/run.py --device cuda   # the same on a GPU (untested here)

Each benchmark lives in its own script (``bench_*.py``, runnable alone). Ratios come from arms
measured side by side in one process, interleaved, as medians (see ``common.py``). Speed is
never asserted in the unit tests.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_bf16  # noqa: E402
import bench_eval  # noqa: E402
import bench_inference  # noqa: E402
import bench_loader  # noqa: E402
import bench_norms  # noqa: E402
import bench_overhead  # noqa: E402
from common import NORMS, SETTINGS, machine, write_result  # noqa: E402
from report import render  # noqa: E402

PLANS = {
    "quick": {"overhead": {"steps": 3, "rounds": 1},
              "norms": {"setting": "embedded", "batch_size": 2, "rounds": 1,
                        "norms": ("frozen_bn", "gn")},
              "eval": {"num_images": 100, "rounds": 1},
              "loader": {"settings": ("embedded",), "batches": 5, "steps": 1},
              "inference": {"setting": "embedded", "rounds": 1, "norms": ("frozen_bn", "gn"),
                            "images": 1},
              "bf16": {"settings": ("embedded",), "norms": ("gn",), "rounds": 1}},
    "full": {"overhead": {"steps": 6, "rounds": 3},
             "norms": {"setting": "512", "batch_size": 2, "rounds": 3, "norms": NORMS},
             "eval": {"num_images": 500, "rounds": 3},
             "loader": {"settings": ("embedded", "800"), "batches": 20, "steps": 1},
             "inference": {"setting": "800", "rounds": 2, "norms": NORMS, "images": 2},
             "bf16": {"settings": ("embedded", "512"), "norms": ("gn", "frozen_bn"), "rounds": 3}},
}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke-test sizes (< ~3 min)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    p.add_argument("--only", nargs="+", choices=list(PLANS["full"]), help="run only these")
    p.add_argument("--md", type=Path, default=HERE.parent / "BENCHMARKS.md")
    p.add_argument("--json", type=Path, default=HERE / "results.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    mode = "quick" if args.quick else "full"
    plan = PLANS[mode]
    results = json.loads(args.json.read_text()) if args.only and args.json.is_file() else {}
    command = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    now = datetime.datetime.now().isoformat(timespec="seconds")
    if args.only and "machine" in results:  # keep the full run's header; record the re-run
        results.setdefault("reruns", []).append({"command": command.strip(), "date": now,
                                                 "machine": machine(args.device)})  # fmt: skip
    else:  # the settings as the full run used them (a re-run section records its own)
        results.update({"command": command, "date": now, "machine": machine(args.device),
                        "settings": {k: {kk: (list(vv) if isinstance(vv, tuple) else vv)
                                         for kk, vv in v.items()} for k, v in SETTINGS.items()}})  # fmt: skip
    results["mode"] = mode
    runners = {
        "overhead": lambda: bench_overhead.run(device=args.device, **plan["overhead"]),
        "norms": lambda: bench_norms.run(device=args.device, threads=args.threads,
                                         **plan["norms"]),
        "eval": lambda: bench_eval.run(**plan["eval"]),
        "loader": lambda: bench_loader.loader_vs_model(device=args.device, **plan["loader"]),
        "inference": lambda: bench_inference.run(device=args.device, **plan["inference"]),
        "bf16": lambda: bench_bf16.run(**plan["bf16"]),  # CPU autocast: always on the CPU
    }  # fmt: skip
    for name, fn in runners.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        results[name] = fn()
        results.setdefault("durations_s", {})[name] = time.perf_counter() - start
        write_result(args.json, results)
    args.md.write_text(render(results))
    print(f"wrote {args.md} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
