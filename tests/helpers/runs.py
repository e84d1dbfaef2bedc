"""Arguments for tiny ``detnorm-train`` runs, shared by the CLI and engine tests, and the check
that two runs ended in the same state."""

import torch
import yaml


def tiny_args(data) -> list[str]:
    """A run of a few seconds: R-18, 64 px images, few proposals, 2 steps."""
    cfg = data.parent / "tiny.yaml"
    if not cfg.exists():
        cfg.write_text(
            yaml.safe_dump(
                {
                    "depth": 18,
                    "train_scales": [64],
                    "max_size": 96,
                    "test_size": 64,
                    "batch_size": 2,
                    "num_workers": 0,
                    "max_steps": 2,
                    "checkpoint_period": 1,
                    "precise_bn_iters": 2,
                    "log_every_n_steps": 1,
                    "accelerator": "cpu",
                    "model_kwargs": {
                        "rpn_batch_size_per_image": 32,
                        "rpn_pre_nms_top_n_train": 100,
                        "rpn_post_nms_top_n_train": 50,
                        "rpn_pre_nms_top_n_test": 100,
                        "rpn_post_nms_top_n_test": 50,
                        "box_batch_size_per_image": 16,
                        "box_detections_per_img": 20,
                    },
                }
            )
        )
    return ["--config", str(cfg), "--data", str(data)]


def assert_same_checkpoint(a: dict, b: dict, start: dict) -> None:
    """Two Lightning checkpoints of runs that went on from ``start``: the same weights and the
    same SGD momentum buffers (of the first optimizer), as :func:`assert_same_state` checks."""
    assert_same_state(a["state_dict"], b["state_dict"], start["state_dict"])
    momenta = [{k: s["momentum_buffer"] for k, s in c["optimizer_states"][0]["state"].items()}
               for c in (a, b, start)]  # fmt: skip
    assert_same_state(*momenta)


def assert_same_state(a: dict, b: dict, start: dict) -> None:
    """Two runs that both went on from ``start`` (tensor dicts, e.g. a ``state_dict``) ended in
    the same state: each float tensor of ``a`` and ``b`` within 0.1 % of how far it moved from
    ``start``; integer tensors equal.

    Not bit-equality: with 3 or more intra-op threads the float32 reductions split differently
    from one run to the next (a resumed run differed from the uninterrupted one by up to 7.5e-9,
    against updates of 4e-4 to 2e-3). A resume that replays, skips or halves a batch, or loses
    the momentum, is off by a sizeable part of the update.
    """
    assert a.keys() == b.keys()
    moved = 0.0
    for key, x in a.items():
        y, x0 = b[key], start[key]
        if not torch.is_floating_point(x):
            assert torch.equal(x, y), key
            continue
        step = (x - x0).abs().max().item()
        diff = (x - y).abs().max().item()
        assert diff <= 1e-3 * step, f"{key}: runs differ by {diff:.3g}, moved by {step:.3g}"
        moved = max(moved, step)
    assert moved > 1e-4, f"nothing moved from the start state (at most {moved:.3g})"
