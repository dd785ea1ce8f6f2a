"""The backbone registry: a network cut at its penultimate layer plus the preprocessing it expects.

Names understood by :func:`load_backbone` (all of them: :func:`available_backbones`):

``pixels``
    The image as flattened grayscale pixels at ``image_size`` × ``image_size`` (default 8), values
    in [0, 1], for tiny images such as scikit-learn's digits. feature_dim = image_size².
``cifar_resnet20`` … ``cifar_resnet110``
    The CIFAR ResNets of :mod:`hierqdrant.vision.cifar_resnet`; ``weights`` is a local checkpoint
    (there are no published weights, so leaving ``weights`` out is an error).
    32 × 32 inputs normalised with the ImageNet mean and std; 64-d features.
any torchvision classification model (``resnet50``, ``vit_b_16``, …)
    ``weights`` is a torchvision weights name (``IMAGENET1K_V2``, ``ResNet50_Weights.IMAGENET1K_V2``,
    ``DEFAULT``), downloaded once into the torch hub cache, or a local checkpoint file. Without
    ``weights`` the model's default (ImageNet) weights are used: read from the cache, downloaded
    where a network exists, and offline a one-line error naming ``--weights FILE`` and the cache file.

A network is randomly initialised only when asked for with ``weights="random"``
(:data:`RANDOM_WEIGHTS`), from a fixed seed (:data:`RANDOM_INIT_SEED`), so the same torch version
rebuilds the same extractor at query time; its description then carries ``"weights": "random"`` and
``"random_init": true`` (see :func:`hierqdrant.vision.extractor.is_random_init`).

The penultimate layer: the final ``nn.Linear`` (``fc``, ``classifier[-1]``, ``heads.head``, …; in
general the last ``nn.Linear`` registered) is replaced by ``nn.Identity`` and kept as
``Backbone.classifier``, so ``classifier(module(x))`` are the logits of the original network.

Where the parts live:

* :mod:`~hierqdrant.vision.preprocessing` — the transforms (Resize → CenterCrop → ToTensor → Normalize,
  with size, mean, std and interpolation from the torchvision weights where they say so, ImageNet's
  defaults otherwise; grayscale pixels for ``pixels``).
* :mod:`~hierqdrant.vision.checkpoints` — local checkpoint files, read with ``weights_only=True``.
* :mod:`~hierqdrant.vision.torchvision_weights` — published torchvision weights: names, download, cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

from hierqdrant.core.classifiers import LinearClassifier
from hierqdrant.core.errors import InputError, ModelMismatchError
from hierqdrant.vision.checkpoints import CheckpointHead, LocalCheckpoint, looks_like_checkpoint_path, read_head
from hierqdrant.vision.cifar_resnet import CifarResNet
from hierqdrant.vision.preprocessing import IMAGENET_MEAN, IMAGENET_STD, GrayPixels, ImageTransform
from hierqdrant.vision.torchvision_weights import (
    hash_prefix,
    published_url,
    read_published_state,
    resolve_weights,
    serve_state_dict,
    weights_preprocessing,
)

__all__ = [
    "Backbone",
    "RANDOM_INIT_SEED",
    "RANDOM_WEIGHTS",
    "WeightsKind",
    "available_backbones",
    "backbone_from_description",
    "head_of",
    "load_backbone",
    "with_head",
]

RANDOM_INIT_SEED = 0
#: The ``weights`` value (``--weights random``) that asks for a randomly initialised network.
RANDOM_WEIGHTS = "random"
_RANDOM_FIX = "--weights random for an untrained network"
DEFAULT_PIXELS_SIZE = 8
CIFAR_IMAGE_SIZE = 32
_CIFAR_DEPTH = {f"cifar_resnet{d}": d for d in (20, 32, 44, 56, 110)}
#: Networks whose classifier is not an ``nn.Linear`` (SqueezeNet ends in conv → ReLU → pool).
_UNSUPPORTED = {"squeezenet1_0", "squeezenet1_1"}

#: Where a backbone's weights came from: none (``pixels``), a fixed-seed random init, a local file,
#: or published torchvision weights.
WeightsKind = Literal["none", "random", "file", "torchvision"]


@dataclass
class Backbone:
    """A network in eval mode whose ``forward(x)`` returns penultimate features (N, feature_dim),
    the transform that turns a PIL RGB image into its input tensor, and the cut-off classifier."""

    name: str
    module: nn.Module
    transform: Callable[[Image.Image], torch.Tensor]
    feature_dim: int
    image_size: int
    classifier: nn.Module | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    weights: str | None = None
    weights_kind: WeightsKind = "none"
    weights_sha256: str | None = None
    weights_resolved: str | None = None
    num_classes: int | None = None
    seed: int | None = None
    preprocess: str = "resize+center_crop+normalize"
    extra: dict[str, Any] = field(default_factory=dict)
    head_name: str | None = None  # where ``classifier`` sat in the network (e.g. ``fc``), for saving

    @property
    def is_conv(self) -> bool:
        """True when the network has 2-D convolutions (then channels_last helps on CUDA)."""
        return any(isinstance(m, nn.Conv2d) for m in self.module.modules())

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole network's state_dict with the classifier back in place: what :func:`load_backbone`
        reads from a checkpoint file (``torch.save({"state_dict": bb.full_state_dict()}, path)``)."""
        state = dict(self.module.state_dict())
        if self.classifier is not None and self.head_name:
            state.update({f"{self.head_name}.{k}": v for k, v in self.classifier.state_dict().items()})
        return state

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of the original network: classifier(module(x))."""
        if self.classifier is None:
            raise InputError(f"backbone {self.name} has no classifier", "use a network with a final layer")
        return self.classifier(self.module(x))

    def description(self) -> dict[str, Any]:
        """JSON-serialisable description, stored in the model manifest so that queries are embedded
        by the same extractor (see :func:`backbone_from_description`)."""
        desc: dict[str, Any] = {
            "name": self.name,
            "weights": self.weights,
            "weights_kind": self.weights_kind,
            "image_size": int(self.image_size),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "interpolation": self.interpolation,
            "preprocess": self.preprocess,
            "feature_dim": int(self.feature_dim),
            "num_classes": self.num_classes,
        }
        if self.weights_sha256 is not None:
            desc["weights_sha256"] = self.weights_sha256
        if self.weights_resolved is not None:
            desc["weights_resolved"] = self.weights_resolved
        if self.seed is not None:
            desc["seed"] = int(self.seed)
        if self.weights_kind == "random":
            desc["random_init"] = True
        desc.update(self.extra)
        return desc


# --------------------------------------------------------------------------------------------------
# network surgery and argument checks


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Deterministic random init without disturbing the caller's CPU random stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _fresh_head(in_features: int, num_classes: int, seed: int) -> nn.Linear:
    with _seeded(seed):
        return nn.Linear(in_features, num_classes)


def _find_head(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The last ``nn.Linear`` in registration order: the classifier of every torchvision model."""
    last: tuple[str, nn.Linear] | None = None
    for qual, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            last = (qual, mod)
    return last


def _cut_head(model: nn.Module, qual: str) -> nn.Module:
    """Replace the submodule ``qual`` by ``nn.Identity`` and return the removed module."""
    parent_name, _, child = qual.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    head = parent.get_submodule(child)
    setattr(parent, child, nn.Identity())
    return head


#: The largest input size a backbone takes (``--image-size``): a network's input is resized to it, and one
#: 4096² RGB float tensor is already 200 MB per image in every worker.
MAX_IMAGE_SIZE = 4096


def _check_positive(value: int | None, what: str, example: int) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise InputError(f"{what} must be a positive integer, got {value!r}", f"pass e.g. {example}")


def _torchvision_names() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def available_backbones() -> list[str]:
    """Every name :func:`load_backbone` accepts."""
    return ["pixels", *_CIFAR_DEPTH, *(n for n in _torchvision_names() if n not in _UNSUPPORTED)]


# --------------------------------------------------------------------------------------------------
# pixels and CIFAR ResNets


def _load_pixels(weights: str | None, image_size: int | None) -> Backbone:
    if weights is not None:
        raise InputError("the pixels backbone has no weights", "leave --weights out for the pixels model")
    size = image_size or DEFAULT_PIXELS_SIZE
    return Backbone(
        name="pixels",
        module=nn.Flatten().eval(),
        transform=GrayPixels(size),
        feature_dim=size * size,
        image_size=size,
        classifier=None,
        mean=(0.0,),
        std=(1.0,),
        interpolation="bilinear",
        weights=None,
        weights_kind="none",
        preprocess="grayscale+resize",
    )


def _load_cifar(name: str, weights: str | None, image_size: int | None, num_classes: int | None, seed: int) -> Backbone:
    depth = _CIFAR_DEPTH[name]
    checkpoint: LocalCheckpoint | None = None
    if weights is None:
        raise InputError(
            f"{name} has no published weights to load",
            f"pass --weights FILE (a local checkpoint, e.g. resnet56-4bfd9763.th) or {_RANDOM_FIX}",
        )
    if weights == RANDOM_WEIGHTS:
        kind: WeightsKind = "random"
        with _seeded(seed):
            model = CifarResNet(depth, num_classes or 10)
    else:
        if not looks_like_checkpoint_path(weights):
            raise InputError(
                f"{name} takes a local checkpoint file, not {weights!r}",
                "pass the checkpoint path with --weights PATH (e.g. resnet56-4bfd9763.th)",
            )
        kind = "file"
        checkpoint = LocalCheckpoint.open(weights)
        read_classes = checkpoint.classes("linear.weight")
        file_classes = read_classes if read_classes is not None else 10
        model = CifarResNet(depth, file_classes)
        checkpoint.load_into(model, name)
        if num_classes is not None and num_classes != file_classes:
            model.linear = _fresh_head(CifarResNet.feature_dim, num_classes, seed)
    size = image_size or CIFAR_IMAGE_SIZE
    classifier = _cut_head(model, "linear")  # forward() now returns forward_features()
    model.eval()
    classifier.eval()
    return Backbone(
        name=name,
        module=model,
        transform=ImageTransform(size, IMAGENET_MEAN, IMAGENET_STD, "bilinear"),
        feature_dim=CifarResNet.feature_dim,
        image_size=size,
        classifier=classifier,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        weights=checkpoint.file_name if checkpoint else RANDOM_WEIGHTS,
        weights_kind=kind,
        weights_sha256=checkpoint.sha256() if checkpoint else None,
        num_classes=int(getattr(classifier, "out_features", 0)) or None,
        seed=seed if kind == "random" else None,
        head_name="linear",
    )


# --------------------------------------------------------------------------------------------------
# torchvision


def _build_tv(name: str, seed: int, **kwargs: Any) -> nn.Module:
    with _seeded(seed):
        return torchvision.models.get_model(name, **kwargs)


def _build_tv_from_file(name: str, checkpoint: LocalCheckpoint, seed: int) -> nn.Module:
    """``name`` with the checkpoint's weights; a fine-tuned head's class count is read off the file."""
    kwargs: dict[str, Any] = {}
    if name in ("inception_v3", "googlenet") and not any(
        k.startswith(("AuxLogits.", "aux1.", "aux2.")) for k in checkpoint.state
    ):
        kwargs["aux_logits"] = False  # fine-tuned checkpoints are often saved without the aux heads
    model = _build_tv(name, seed, **kwargs)
    found = _find_head(model)
    if found is not None:
        file_classes = checkpoint.classes(f"{found[0]}.weight")
        if file_classes is not None and file_classes != found[1].out_features:
            model = _build_tv(name, seed, num_classes=file_classes, **kwargs)
    checkpoint.load_into(model, name)
    return model


def _load_torchvision(
    name: str, weights: str | None, image_size: int | None, num_classes: int | None, seed: int
) -> Backbone:
    enum_member: Any | None = None
    checkpoint: LocalCheckpoint | None = None
    weights = weights or "DEFAULT"  # no weights given: the model's own pretrained (ImageNet) weights
    if weights == RANDOM_WEIGHTS:
        kind: WeightsKind = "random"
        model = _build_tv(name, seed, **({"num_classes": num_classes} if num_classes else {}))
    elif looks_like_checkpoint_path(weights):
        kind = "file"
        checkpoint = LocalCheckpoint.open(weights)
        model = _build_tv_from_file(name, checkpoint, seed)
    else:
        kind = "torchvision"
        enum_member = resolve_weights(name, weights)
        state = read_published_state(enum_member, model=name)
        with serve_state_dict(enum_member, state), _seeded(seed):
            model = torchvision.models.get_model(name, weights=enum_member)
    found = _find_head(model)
    if found is None:
        raise InputError(f"{name} has no final linear layer to cut off", "pick another backbone, e.g. resnet50")
    head_name, head = found
    if num_classes is not None and num_classes != head.out_features:
        head = _fresh_head(head.in_features, num_classes, seed)
    _cut_head(model, head_name)
    model.eval()
    head.eval()
    default_size, mean, std, interp = weights_preprocessing(enum_member)
    fixed = getattr(model, "image_size", None)  # ViTs accept exactly one input size
    if isinstance(fixed, int) and image_size is not None and image_size != fixed:
        raise InputError(
            f"{name} accepts only {fixed}×{fixed} inputs, not image_size={image_size}",
            f"leave --image-size out or set it to {fixed}",
        )
    size = image_size or (fixed if isinstance(fixed, int) else default_size)
    return Backbone(
        name=name,
        module=model,
        transform=ImageTransform(size, mean, std, interp),
        feature_dim=int(head.in_features),
        image_size=size,
        classifier=head,
        mean=mean,
        std=std,
        interpolation=interp,
        weights=checkpoint.file_name if checkpoint else weights,
        weights_kind=kind,
        weights_sha256=checkpoint.sha256() if checkpoint else None,
        weights_resolved=str(enum_member) if enum_member is not None else None,
        num_classes=int(head.out_features),
        seed=seed if kind == "random" else None,
        head_name=head_name,
    )


# --------------------------------------------------------------------------------------------------
# public entry points


def with_head(backbone: Backbone) -> Backbone:
    """The same network with its final layer kept: features = classifier(penultimate features).

    For a network trained with ``hierqdrant train --objective semantic`` these are the image's
    semantic embedding (Barz & Denzler 2019), compared by cosine.
    """
    if backbone.classifier is None or not isinstance(backbone.classifier, nn.Linear):
        raise InputError(f"backbone {backbone.name} has no final linear layer", "drop --head")
    out_dim = int(backbone.classifier.out_features)
    return dataclasses.replace(
        backbone,
        module=nn.Sequential(backbone.module, backbone.classifier).eval(),
        feature_dim=out_dim,
        classifier=None,
        extra={**backbone.extra, "output": "head"},
    )


def head_of(backbone: Backbone, checkpoint: str | None = None) -> CheckpointHead:
    """The network's final layer as a query classifier of its penultimate features (DESIGN.md §1.5:
    ``head``), with the class names and objective that ``checkpoint`` (the local weights file, if any:
    a ``hierqdrant train`` checkpoint saves them) records beside it."""
    layer = backbone.classifier
    if not isinstance(layer, nn.Linear):
        raise InputError(
            f"backbone {backbone.name} has no final linear layer to score classes with",
            "use --query-classifier tied",
        )
    weight = layer.weight.detach().cpu().to(torch.float64).numpy()
    bias = layer.bias.detach().cpu().to(torch.float64).numpy() if layer.bias is not None else np.zeros(weight.shape[0])
    head = CheckpointHead(LinearClassifier(weight, bias), key=f"{backbone.head_name or 'classifier'}.weight")
    if checkpoint is not None and looks_like_checkpoint_path(checkpoint) and Path(checkpoint).expanduser().is_file():
        saved = read_head(checkpoint, backbone.feature_dim)
        head.classes, head.objective = saved.classes, saved.objective
    return head


def load_backbone(
    name: str,
    weights: str | None = None,
    *,
    image_size: int | None = None,
    num_classes: int | None = None,
    seed: int = RANDOM_INIT_SEED,
) -> Backbone:
    """Build the feature extractor ``name`` (see the module docstring for names and weights).

    ``weights``: a local checkpoint file, a torchvision weights name, ``"random"`` (a randomly
    initialised network, only when asked for), or ``None`` (torchvision models: their default
    pretrained weights; CIFAR ResNets have none and refuse).
    ``image_size`` overrides the input size. ``num_classes``: the size of the classifier; with
    random weights the network is built with it, and when it differs from the loaded classes the
    loaded classifier is replaced by a fresh ``nn.Linear`` (e.g. to fine-tune on another dataset).
    ``seed`` fixes random initialisation (random weights, and a fresh classifier).
    """
    if not isinstance(name, str) or not name.strip():
        raise InputError("no backbone name given", "pass e.g. --backbone resnet50")
    key = name.strip().lower()
    _check_positive(image_size, "image_size", 224)
    if image_size is not None and image_size > MAX_IMAGE_SIZE:  # 100000: a 13 GB worker, then the OOM killer
        raise InputError(f"image_size {image_size} is too large (at most {MAX_IMAGE_SIZE})", "pass e.g. 224")
    _check_positive(num_classes, "num_classes", 10)
    if weights is not None:
        weights = str(weights).strip() or None
    if weights is not None and weights.lower() == RANDOM_WEIGHTS:
        weights = RANDOM_WEIGHTS
    if key == "pixels":
        return _load_pixels(weights, image_size)
    if key in _CIFAR_DEPTH:
        return _load_cifar(key, weights, image_size, num_classes, seed)
    if key in _UNSUPPORTED:
        raise InputError(f"{key} has no linear classifier to cut off", "pick another backbone, e.g. resnet50")
    if key in _torchvision_names():
        return _load_torchvision(key, weights, image_size, num_classes, seed)
    raise InputError(
        f"unknown backbone {name!r}",
        "use pixels, cifar_resnet20/32/44/56/110 or a torchvision classification model such as resnet50 "
        "(see available_backbones())",
    )


def _infer_kind(weights: Any) -> WeightsKind:
    """The weights kind of a description written before ``weights_kind`` was stored."""
    if weights is None or str(weights).strip().lower() == RANDOM_WEIGHTS:
        return "random"
    return "file" if looks_like_checkpoint_path(str(weights)) else "torchvision"


def _same(a: Any, b: Any) -> bool:
    return [round(float(v), 6) for v in a] == [round(float(v), 6) for v in b]


def backbone_from_description(desc: Mapping[str, Any], weights_path: str | None = None) -> Backbone:
    """Rebuild the extractor that :meth:`Backbone.description` described.

    Local weights files are not stored with a model: pass ``weights_path`` (its sha256 is checked).
    A ``weights_path`` also stands in for torchvision weights on an offline machine (checked
    against the hash prefix in torchvision's file name). The preprocessing (size, mean, std,
    interpolation) is taken from ``desc`` so queries go through exactly the same pixels.
    """
    try:
        name = str(desc["name"])
        feature_dim = int(desc["feature_dim"])
        image_size = int(desc["image_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"the feature-extractor description is incomplete ({exc})", "re-create the model with hierqdrant"
        ) from exc
    kind = desc.get("weights_kind") or _infer_kind(desc.get("weights"))
    num_classes = desc.get("num_classes")
    seed = int(desc.get("seed", RANDOM_INIT_SEED))
    rebuild = functools.partial(load_backbone, name, image_size=image_size, num_classes=num_classes, seed=seed)
    if name == "pixels":
        bb = load_backbone("pixels", image_size=image_size)
    elif kind == "file":
        if weights_path is None:
            raise InputError(
                f"the model's feature extractor {name} was built from the local weights file "
                f"{desc.get('weights')} (sha256 {str(desc.get('weights_sha256'))[:12]}…)",
                "pass that file with --weights PATH",
            )
        bb = rebuild(weights_path)
        want = desc.get("weights_sha256")
        if want and bb.weights_sha256 != want:
            raise ModelMismatchError(
                f"{Path(weights_path).name} is not the weights file the model was built with "
                f"({desc.get('weights')}, sha256 {str(want)[:12]}…)",
                "pass the same checkpoint that was used when the model was fitted",
            )
    elif kind == "torchvision":
        resolved = str(desc.get("weights_resolved") or desc.get("weights"))
        if weights_path is not None:
            bb = rebuild(weights_path)
            url = published_url(name, resolved)
            prefix = hash_prefix(url)
            if prefix and bb.weights_sha256 and not bb.weights_sha256.startswith(prefix):
                raise ModelMismatchError(
                    f"{Path(weights_path).name} is not the file of the torchvision weights {resolved}",
                    f"pass the file downloaded from {url}",
                )
            bb.weights, bb.weights_kind, bb.weights_resolved = desc.get("weights"), "torchvision", resolved
            bb.weights_sha256 = None
        else:
            bb = rebuild(resolved)
    else:  # "random": the same fixed-seed network (older descriptions stored weights=None)
        bb = rebuild(RANDOM_WEIGHTS)
    mean = tuple(float(v) for v in desc.get("mean", bb.mean))
    std = tuple(float(v) for v in desc.get("std", bb.std))
    interp = str(desc.get("interpolation", bb.interpolation))
    if name != "pixels" and not (_same(mean, bb.mean) and _same(std, bb.std) and interp == bb.interpolation):
        bb.transform = ImageTransform(image_size, mean, std, interp)
        bb.mean, bb.std, bb.interpolation = mean, std, interp
    if bb.feature_dim != feature_dim:
        raise ModelMismatchError(
            f"backbone {name} now gives {bb.feature_dim}-d features, the model expects {feature_dim}-d",
            "use the backbone and weights the model was fitted with",
        )
    return bb
