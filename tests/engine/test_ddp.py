"""Two gloo processes train through ``detnorm.cli.train.run_training`` with Lightning DDP on CPU:
parameters stay identical across ranks, and the sync_bn statistics after a step equal a
single-process BN forward over the joined batch (both ranks' images)."""

import os

import pytest
import torch
from helpers.dist_utils import run_distributed

pytestmark = pytest.mark.filterwarnings("ignore")


class _Capture:
    """Lightning callback (built in the worker) recording what the test needs."""

    def __new__(cls):
        import pytorch_lightning as pl

        class Capture(pl.Callback):
            def __init__(self):
                self.init, self.images, self.after_step1, self.val_ids = None, [], None, []

            def on_train_start(self, trainer, pl_module):
                self.init = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                self.images.append([im.detach().clone() for im in batch[0]])

            def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, *_):
                if not trainer.sanity_checking:
                    self.val_ids.extend(int(t["image_id"]) for t in batch[1])

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                if trainer.global_step == 1:
                    sd = pl_module.model.state_dict()
                    self.after_step1 = {k: v.clone() for k, v in sd.items() if "running" in k}

        return Capture()


def _worker(rank, world, argv):
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        NODE_RANK="0",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT="29500",
    )  # fmt: skip  (the process group already exists; Lightning must not launch processes)
    from detnorm.cli import train as cli
    from detnorm.engine import run as training

    capture = _Capture()
    build = training.build_trainer

    def build_with_capture(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.callbacks.append(capture)
        return trainer

    training.build_trainer = build_with_capture
    cfg = cli.parse_config(argv)
    run = cli.run_training(cfg)
    model = run.module.model
    return {
        "params": {k: p.detach().clone() for k, p in model.named_parameters()},
        "buffers": {k: b.clone() for k, b in model.named_buffers()},
        "init": capture.init,
        "images": capture.images,
        "after_step1": capture.after_step1,
        "hparams": dict(run.module.hparams),
        "world": run.trainer.world_size,
        "metrics": run.metrics,
        "val_ids": capture.val_ids,
    }


@pytest.fixture(scope="module")
def square_data(tmp_path_factory):
    from detnorm.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("ddp") / "data"
    generate_dataset(root, seed=1, num_train=4, num_val=2, image_size=(64, 64))
    return root


def test_ddp_two_processes_sync_bn(square_data, tmp_path):
    from helpers.runs import tiny_args

    argv = [
        *tiny_args(square_data), "--norm", "sync_bn", "--batch-size", "1", "--devices", "2",
        "--max-steps", "2", "--no-precise-bn", "--output-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    r0, r1 = run_distributed(_worker, world_size=2, args=(argv,), timeout=240)
    assert r0["world"] == r1["world"] == 2
    assert r0["hparams"]["total_batch_size"] == 2
    # identical parameters and synchronized BN statistics on both ranks
    for k, p in r0["params"].items():
        assert torch.equal(p, r1["params"][k]), k
    for k, b in r0["buffers"].items():
        if "running" in k:
            torch.testing.assert_close(b, r1["buffers"][k], rtol=1e-5, atol=1e-6, msg=k)
    # the two ranks trained on different images (the step-1 batches are disjoint)
    assert not torch.equal(r0["images"][0][0], r1["images"][0][0])
    assert r0["metrics"] == r1["metrics"] and set(r0["metrics"]) >= {"bbox", "segm"}

    # single process, plain BN semantics (no process group): the joined batch of step 1
    from detnorm.engine.module import DetnormModule

    module = DetnormModule(**r0["hparams"])
    module.model.load_state_dict(r0["init"])
    model = module.model.train()
    joined = r0["images"][0] + r1["images"][0]
    with torch.no_grad():
        batch, _ = model.transform(joined)
        model.backbone(batch.tensors)
    ref = model.state_dict()
    checked = 0
    for k, v in r0["after_step1"].items():
        if k.startswith("backbone.") and k.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(v, ref[k], rtol=1e-4, atol=1e-5, msg=k)
            assert not torch.equal(ref[k], r0["init"][k]), k  # the statistics did move
            checked += 1
    assert checked >= 2 * 20  # every BN of the ResNet-18 body and the FPN

    # each rank evaluated its own half of the val images, and the gathered metrics equal one
    # process evaluating the final checkpoint on all of them
    import json

    from detnorm.cli.eval import main as eval_main

    assert len(r0["val_ids"]) == len(r1["val_ids"]) == 1
    assert set(r0["val_ids"]).isdisjoint(r1["val_ids"])
    out = tmp_path / "eval"
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    argv = ["--checkpoint", str(ckpt), "--data", str(square_data), "--output-dir", str(out)]
    assert eval_main(argv) == 0
    evaluated = json.loads((out / "metrics.json").read_text())
    for iou_type in ("bbox", "segm"):
        assert evaluated[iou_type] == r0["metrics"][iou_type], iou_type
