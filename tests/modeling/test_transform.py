"""DetnormTransform: normalization per input format, no resize in training, torchvision eval."""

import pytest
import torch

from detnorm.errors import ConfigError
from detnorm.modeling.input_transform import DetnormTransform, set_input_format
from detnorm.modeling.maskrcnn import build_maskrcnn


def test_transform_normalization_and_resizing():
    image = torch.rand(3, 40, 60)
    rgb = DetnormTransform(80, 200).eval()
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = (image - mean[:, None, None]) / std[:, None, None]
    torch.testing.assert_close(rgb.normalize(image), expected)
    caffe = DetnormTransform(80, 200, input_format="caffe2")
    bgr255 = image[[2, 1, 0]] * 255
    pixel_means = torch.tensor([102.9801, 115.9465, 122.7717])
    torch.testing.assert_close(caffe.normalize(image), bgr255 - pixel_means[:, None, None])
    rgb.set_input_format("caffe2")
    torch.testing.assert_close(rgb.normalize(image), caffe.normalize(image))

    target = {"boxes": torch.tensor([[6.0, 4.0, 30.0, 20.0]]), "labels": torch.tensor([1])}
    caffe.train()
    batch, targets = caffe([image], [target])
    assert batch.image_sizes == [(40, 60)] and batch.tensors.shape == (1, 3, 64, 64)
    torch.testing.assert_close(targets[0]["boxes"], target["boxes"])
    caffe.eval()
    batch, _ = caffe([image])
    assert batch.image_sizes == [(80, 120)]  # short side to min_size in eval
    boxes = torch.tensor([[12.0, 8.0, 60.0, 40.0]])
    masks = torch.ones(1, 1, 28, 28)
    out = caffe.postprocess([{"boxes": boxes, "masks": masks}], [(80, 120)], [(40, 60)])
    torch.testing.assert_close(out[0]["boxes"], boxes / 2)
    assert out[0]["masks"].shape == (1, 1, 40, 60)


def test_model_input_format_switch():
    model = build_maskrcnn(num_classes=3, depth=18, norm="gn", input_format="caffe2")
    assert isinstance(model.transform, DetnormTransform)
    assert model.transform.input_format == "caffe2"
    set_input_format(model, "rgb")
    assert model.transform.image_std == [0.229, 0.224, 0.225]
    with pytest.raises(ConfigError, match="allowed: rgb, caffe2") as err:
        set_input_format(model, "yuv")
    assert err.value.key == "input_format"
    assert err.value.message == "unknown value 'yuv'; allowed: rgb, caffe2"
