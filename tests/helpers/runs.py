"""Arguments for tiny ``detnorm-train`` runs, shared by the CLI and engine tests."""

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
