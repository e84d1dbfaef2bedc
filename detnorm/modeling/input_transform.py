"""The model's input transform: normalization for the weights' input format, batching, eval resize.

Images enter the model as a list of float tensors of shape ``(3, H, W)``, RGB, values in
``[0, 1]``. :class:`DetnormTransform` differs from torchvision's
``GeneralizedRCNNTransform`` in one way: in TRAINING mode it does not resize (detnorm's data
loader has already resized and flipped the image and its boxes/masks), it only normalizes
and batches. In EVAL mode it behaves exactly as torchvision: the image is resized so its
short side is ``min_size[-1]`` (long side capped at ``max_size``), and ``postprocess`` maps
boxes (xyxy, absolute pixels) and masks back to the ORIGINAL image size.

Input formats (what the pretrained weights expect):

======== ==================================================================================
rgb      torchvision / ImageNet: ``(x - mean) / std`` on RGB in [0, 1], mean
         ``(0.485, 0.456, 0.406)``, std ``(0.229, 0.224, 0.225)``
caffe2   Detectron: channels reversed to BGR, scaled to [0, 255], minus the pixel means
         ``(102.9801, 115.9465, 122.7717)`` (B, G, R), std 1
======== ==================================================================================
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from detnorm.errors import ConfigError

__all__ = ["INPUT_FORMATS", "DetnormTransform", "set_input_format"]

# name -> (channel order, value scale, mean, std); mean/std are in the model's channel order.
INPUT_FORMATS: dict[str, tuple[str, float, tuple[float, ...], tuple[float, ...]]] = {
    "rgb": ("rgb", 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "caffe2": ("bgr", 255.0, (102.9801, 115.9465, 122.7717), (1.0, 1.0, 1.0)),
}


def _check_format(input_format: str) -> str:
    if input_format not in INPUT_FORMATS:
        raise ConfigError(
            "input_format",
            f"unknown value {input_format!r}; allowed: {', '.join(INPUT_FORMATS)}",
        )
    return input_format


class DetnormTransform(GeneralizedRCNNTransform):
    """Normalize (per ``input_format``), batch, and resize in eval mode only.

    Args:
        min_size, max_size: eval (test) size: short side, and cap on the long side.
        input_format: ``"rgb"`` or ``"caffe2"`` (see the module docstring).
        image_mean, image_std: override the format's mean/std (in the format's channel
            order and value scale); ``None`` keeps the format's values.
        size_divisible: the batch is zero-padded so H and W are multiples of this.
    """

    def __init__(
        self,
        min_size: int | Sequence[int] = 800,
        max_size: int = 1333,
        *,
        input_format: str = "rgb",
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        size_divisible: int = 32,
        fixed_size: tuple[int, int] | None = None,
    ) -> None:
        _, _, mean, std = INPUT_FORMATS[_check_format(input_format)]
        super().__init__(
            min_size,
            max_size,
            list(image_mean if image_mean is not None else mean),
            list(image_std if image_std is not None else std),
            size_divisible=size_divisible,
            fixed_size=fixed_size,
        )
        self.input_format = input_format

    def set_input_format(self, input_format: str) -> None:
        """Switch channel order, scale, mean and std to ``input_format``'s."""
        _, _, mean, std = INPUT_FORMATS[_check_format(input_format)]
        self.input_format = input_format
        self.image_mean, self.image_std = list(mean), list(std)

    def normalize(self, image: Tensor) -> Tensor:
        """``(3, H, W)`` RGB in [0, 1] -> normalized ``(3, H, W)`` in the format's channel order."""
        if not image.is_floating_point():
            raise TypeError(
                f"images must be float tensors with values in [0, 1], got dtype {image.dtype}"
            )
        order, scale, _, _ = INPUT_FORMATS[self.input_format]
        if order == "bgr":
            image = image.flip(0)
        if scale != 1.0:
            image = image * scale
        return super().normalize(image)

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        """Identity in training (the loader resized already); torchvision's eval resize otherwise."""
        if self.training:
            return image, target
        return super().resize(image, target)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(input_format={self.input_format!r}, "
            f"mean={self.image_mean}, std={self.image_std}, "
            f"eval_resize=(min_size={self.min_size}, max_size={self.max_size}), "
            "train_resize=none)"
        )


def set_input_format(model: nn.Module, input_format: str) -> None:
    """Switch ``model.transform`` (a :class:`DetnormTransform`) to ``input_format``."""
    transform = getattr(model, "transform", None)
    if not isinstance(transform, DetnormTransform):
        raise TypeError(
            f"set_input_format needs a model built by detnorm.modeling.maskrcnn.build_maskrcnn "
            f"(model.transform is {type(transform).__name__}, not DetnormTransform)"
        )
    transform.set_input_format(input_format)
