"""DetectionDataModule: batch format, split sizes, and mid-epoch resume through Lightning."""

import shutil

import pytest
import pytorch_lightning as pl
import torch

from detnorm.data import DetectionDataModule, generate_dataset
from detnorm.errors import ConfigError


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return generate_dataset(
        tmp_path_factory.mktemp("syn") / "ds", num_train=12, num_val=3, image_size=64
    )


def test_batches_and_attributes(tiny_root):
    dm = DetectionDataModule(tiny_root, batch_size=2, train_scales=(96,), max_size=120)
    dm.setup("fit")
    assert dm.num_classes == 7 and dm.num_categories == 6 and len(dm.categories) == 6
    assert dm.label_to_cat_id == {i: i for i in range(1, 7)}
    assert dm.val_ann_file == tiny_root / "annotations" / "val.json"
    assert len(dm.val_coco.getImgIds()) == 3 and dm.pin_memory == torch.cuda.is_available()
    images, targets = next(iter(dm.train_dataloader()))
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == 2
    assert len({img.shape[1] >= img.shape[2] for img in images}) == 1  # one aspect group
    for img, t in zip(images, targets, strict=True):
        h, w = img.shape[1:]
        assert min(h, w) == 96 or max(h, w) == 120  # short side 96 unless the cap applies
        assert img.dtype == torch.float32 and img.min() >= 0 and img.max() <= 1
        assert t["masks"].shape[1:] == (h, w) and t["labels"].min() >= 1
    val_images, val_targets = next(iter(dm.val_dataloader()))
    for img, t in zip(val_images, val_targets, strict=True):
        info = dm.val_coco.imgs[t["image_id"]]
        assert img.shape[1:] == (info["height"], info["width"])  # original size
    assert len(dm.test_dataloader().dataset) == 3  # test defaults to val


def test_setup_errors_carry_their_option(tiny_root, tmp_path):
    """setup's contract: a missing path is ConfigError with the option's key; a broken
    annotation file is a plain ValueError (not ConfigError) naming the file."""
    ann = tiny_root / "annotations"
    for kw, key in [
        ({"data": tmp_path / "nope"}, "data"),
        ({"data": tmp_path}, "data"),  # no known layout
        ({"data": tiny_root, "val_ann": tmp_path / "v.json"}, "val_ann"),
        ({"data": tiny_root, "train_images": tmp_path / "gone"}, "train_images"),
        ({"train_ann": ann / "train.json"}, "train_images"),  # the others not given
    ]:
        data = kw.pop("data", None)
        with pytest.raises(ConfigError) as e:
            DetectionDataModule(data, **kw).setup("fit")
        assert e.value.key == key and not e.value.message.startswith(key)
    bad = tmp_path / "val.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"val.json is not valid JSON") as e:
        DetectionDataModule(tiny_root, val_ann=bad).setup("fit")
    assert not isinstance(e.value, ConfigError)
    empty = tmp_path / "ds"
    shutil.copytree(tiny_root / "annotations", empty / "annotations")
    (empty / "images").mkdir()
    with pytest.raises(ValueError, match=r"train.json: .*cannot be read") as e:
        DetectionDataModule(empty).setup("fit")  # image_check.BadImagesError
    assert not isinstance(e.value, ConfigError)


class _Recorder(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append([t["image_id"] for t in batch[1]])
        return (self.w - 1).pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(tmp_path, **kw):
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        use_distributed_sampler=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        **kw,
    )


def test_lightning_resume_continues_mid_epoch(tiny_root, tmp_path):
    kw = dict(batch_size=2, train_scales=(32,), max_size=64, seed=5)
    ref = _Recorder()
    _trainer(tmp_path / "ref", max_epochs=2).fit(ref, DetectionDataModule(tiny_root, **kw))

    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=4)
    first = _Recorder()
    _trainer(tmp_path / "a", max_steps=4, callbacks=[ckpt]).fit(
        first, DetectionDataModule(tiny_root, **kw)
    )
    second = _Recorder()
    _trainer(tmp_path / "b", max_epochs=2).fit(
        second, DetectionDataModule(tiny_root, **kw), ckpt_path=ckpt.best_model_path
    )
    assert first.seen == ref.seen[:4]
    assert first.seen + second.seen == ref.seen
