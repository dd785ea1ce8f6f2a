"""The image side: find a dataset's images, decode them robustly, turn them into features.

Submodules:

* :mod:`~hierqdrant.vision.sources` — :func:`discover` (ImageFolder, train/test, CUB-200-2011, unlabelled)
* :mod:`~hierqdrant.vision.images` — :func:`load_rgb`, :class:`ImageDecodeError`
* :mod:`~hierqdrant.vision.backbones` — the backbone registry: :func:`load_backbone`, :class:`Backbone`
* :mod:`~hierqdrant.vision.preprocessing` — the image transforms a backbone expects
* :mod:`~hierqdrant.vision.checkpoints` — :func:`read_checkpoint` (weights-only), strict loading
* :mod:`~hierqdrant.vision.torchvision_weights` — published torchvision weights: names, download, cache
* :mod:`~hierqdrant.vision.cifar_resnet` — the CIFAR ResNets of He et al. (2016)
* :mod:`~hierqdrant.vision.extract` — :func:`extract_features`

Names are imported lazily so that ``from hierqdrant.vision import discover`` does not load torch.
Nothing here imports qdrant: this package runs on a GPU machine that has only torch, torchvision,
numpy, pillow, rich and typer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hierqdrant.vision.backbones import (
        Backbone,
        available_backbones,
        backbone_from_description,
        load_backbone,
    )
    from hierqdrant.vision.checkpoints import read_checkpoint
    from hierqdrant.vision.extract import Extracted, extract_features, resolve_device
    from hierqdrant.vision.images import IMAGE_EXTENSIONS, MIN_SIDE, ImageDecodeError, load_rgb
    from hierqdrant.vision.sources import ImageItem, ImageSource, Skipped, discover

_EXPORTS: dict[str, str] = {
    "ImageItem": "sources",
    "ImageSource": "sources",
    "Skipped": "sources",
    "discover": "sources",
    "IMAGE_EXTENSIONS": "images",
    "MIN_SIDE": "images",
    "ImageDecodeError": "images",
    "load_rgb": "images",
    "Backbone": "backbones",
    "available_backbones": "backbones",
    "backbone_from_description": "backbones",
    "load_backbone": "backbones",
    "read_checkpoint": "checkpoints",
    "Extracted": "extract",
    "extract_features": "extract",
    "resolve_device": "extract",
}

__all__ = [
    "IMAGE_EXTENSIONS",
    "MIN_SIDE",
    "Backbone",
    "Extracted",
    "ImageDecodeError",
    "ImageItem",
    "ImageSource",
    "Skipped",
    "available_backbones",
    "backbone_from_description",
    "discover",
    "extract_features",
    "load_backbone",
    "load_rgb",
    "read_checkpoint",
    "resolve_device",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
