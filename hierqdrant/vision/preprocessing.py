"""The pixels a network expects: a PIL image turned into the input tensor of a backbone.

Two transforms, both module-level classes so DataLoader workers can pickle them:

:class:`ImageTransform`
    Resize(image_size) (shorter side) → CenterCrop(image_size) → ToTensor (to [0, 1]) →
    Normalize((x − mean) / std): the preprocessing of every torchvision classifier and of the CIFAR
    ResNets. It can be split in two exact halves (uint8 geometry in the workers, normalisation on
    the device).
:class:`GrayPixels`
    The image as grayscale pixels in [0, 1] at a fixed size, for the ``pixels`` backbone.

ImageNet's defaults (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`) apply wherever the weights do not
say otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from hierqdrant.core.errors import InputError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "GrayPixels", "ImageTransform"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class GrayPixels:
    """PIL image → (1, s, s) float tensor of luma L = 0.299 R + 0.587 G + 0.114 B, scaled to [0, 1]."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img: Image.Image) -> torch.Tensor:
        gray = img.convert("L")
        if gray.size != (self.size, self.size):
            gray = gray.resize((self.size, self.size), Image.Resampling.BILINEAR)
        arr = np.asarray(gray, dtype=np.float32) / 255.0
        return torch.from_numpy(arr).unsqueeze(0)

    def __repr__(self) -> str:
        return f"GrayPixels(size={self.size})"


class ImageTransform:
    """Resize(image_size) → CenterCrop(image_size) → ToTensor → Normalize(mean, std).

    ``__call__`` gives the normalised float tensor, x = (p / 255 − mean) / std per channel.
    :meth:`to_uint8` stops before ToTensor (a uint8 CHW tensor) and :meth:`normalize` finishes the
    job on a batch, with the same floating-point operations in the same order, so the result is
    the same. :func:`~hierqdrant.vision.extract.extract_features` uses the split to move 4× fewer
    bytes from its workers and to normalise on the GPU.
    """

    def __init__(
        self,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        interpolation: str = "bilinear",
    ) -> None:
        try:
            mode = T.InterpolationMode(interpolation)
        except ValueError as exc:
            raise InputError(f"unknown interpolation {interpolation!r}", "use bilinear or bicubic") from exc
        self.image_size = int(image_size)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.interpolation = interpolation
        self._geometry = T.Compose([T.Resize(self.image_size, interpolation=mode), T.CenterCrop(self.image_size)])
        self._to_tensor = T.ToTensor()
        self._normalize = T.Normalize(mean=list(self.mean), std=list(self.std))

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self._normalize(self._to_tensor(self._geometry(img)))

    def to_uint8(self, img: Image.Image) -> torch.Tensor:
        """The resized, cropped image as a (3, S, S) uint8 tensor."""
        return T.functional.pil_to_tensor(self._geometry(img if img.mode == "RGB" else img.convert("RGB")))

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) uint8 → float: (x / 255 − mean) / std, as ToTensor + Normalize compute it."""
        return self.normalizer(batch.device)(batch)

    def normalizer(self, device: torch.device | str) -> Callable[[torch.Tensor], torch.Tensor]:
        """:meth:`normalize` with mean and std already on ``device`` (no host copy per batch)."""
        dtype = torch.get_default_dtype()
        mean = torch.tensor(self.mean, dtype=dtype).view(1, -1, 1, 1).to(device)
        std = torch.tensor(self.std, dtype=dtype).view(1, -1, 1, 1).to(device)

        def run(batch: torch.Tensor) -> torch.Tensor:
            return batch.to(dtype).div_(255).sub_(mean).div_(std)

        return run

    def __repr__(self) -> str:
        return (
            f"ImageTransform(Resize({self.image_size}, {self.interpolation}), CenterCrop({self.image_size}), "
            f"ToTensor(), Normalize(mean={list(self.mean)}, std={list(self.std)}))"
        )
