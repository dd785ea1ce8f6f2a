"""Feature extractors: a network cut at its penultimate layer plus the preprocessing it expects.

Names understood by :func:`load_backbone`:

``pixels``
    The image as flattened grayscale pixels at ``image_size`` × ``image_size`` (default 8), values
    in [0, 1], for tiny images such as scikit-learn's digits. feature_dim = image_size².
``cifar_resnet20`` … ``cifar_resnet110``
    The CIFAR ResNets of :mod:`hierqdrant.vision.cifar_resnet`; ``weights`` is a local checkpoint.
    32 × 32 inputs normalised with the ImageNet mean and std; 64-d features.
any torchvision classification model (``resnet50``, ``vit_b_16``, …)
    ``weights`` is a torchvision weights name (``IMAGENET1K_V2``, ``ResNet50_Weights.IMAGENET1K_V2``,
    ``DEFAULT``), downloaded once into the torch hub cache, or a local checkpoint file.

Without weights the network is randomly initialised from a fixed seed (:data:`RANDOM_INIT_SEED`),
so the same torch version rebuilds the same extractor at query time.

The penultimate layer: the final ``nn.Linear`` (``fc``, ``classifier[-1]``, ``heads.head``, …; in
general the last ``nn.Linear`` registered) is replaced by ``nn.Identity`` and kept as
``Backbone.classifier``, so ``classifier(module(x))`` are the logits of the original network.

Preprocessing: Resize(image_size) (shorter side) → CenterCrop(image_size) → ToTensor (to [0, 1]) →
Normalize((x − mean) / std), with image_size, mean, std and interpolation taken from the torchvision
weights where they say so, ImageNet's defaults (224 px, mean (0.485, 0.456, 0.406),
std (0.229, 0.224, 0.225), bilinear) otherwise.

Checkpoints are read with ``torch.load(..., map_location="cpu", weights_only=True)`` only; a file that
needs arbitrary unpickling is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from pickle import UnpicklingError  # the error weights-only loading raises; nothing is unpickled here
from typing import Any, Literal
from urllib.parse import urlparse

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms as T

from hierqdrant.core.errors import InputError, ModelMismatchError, NotFoundError
from hierqdrant.vision.cifar_resnet import CifarResNet

__all__ = [
    "Backbone",
    "ImageTransform",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RANDOM_INIT_SEED",
    "available_backbones",
    "backbone_from_description",
    "load_backbone",
    "read_checkpoint",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
RANDOM_INIT_SEED = 0
DEFAULT_TORCHVISION_SIZE = 224
DEFAULT_PIXELS_SIZE = 8
_CIFAR_DEPTH = {f"cifar_resnet{d}": d for d in (20, 32, 44, 56, 110)}
#: Networks whose classifier is not an ``nn.Linear`` (SqueezeNet ends in conv → ReLU → pool).
_UNSUPPORTED = {"squeezenet1_0", "squeezenet1_1"}
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".th", ".ckpt", ".bin", ".tar", ".pkl")
#: Seconds to wait for the download host to answer before declaring the machine offline.
_PROBE_TIMEOUT_S = 5.0
#: Socket timeout during the download itself, so a stalled transfer fails instead of hanging.
_DOWNLOAD_TIMEOUT_S = 60.0
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")
_OFFLINE_FIX = "pass a local checkpoint file with --weights PATH (download {url} on a machine with internet access)"

WeightsKind = Literal["none", "random", "file", "torchvision"]


class _GrayPixels:
    """PIL image → (1, s, s) float tensor of luma L = 0.299 R + 0.587 G + 0.114 B, scaled to [0, 1].

    A module-level class (not a lambda) so DataLoader workers can pickle it.
    """

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
        desc.update(self.extra)
        return desc


# --------------------------------------------------------------------------------------------------
# checkpoints


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _looks_like_file(weights: str) -> bool:
    return (
        os.path.exists(os.path.expanduser(weights))
        or os.sep in weights
        or "/" in weights
        or weights.lower().endswith(_CHECKPOINT_SUFFIXES)
    )


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state_dict in a checkpoint file, with ``module.`` (DataParallel) and ``_orig_mod.``
    (torch.compile) prefixes stripped.

    Accepts a bare state_dict or a dict holding it under ``state_dict``, ``model``,
    ``model_state_dict`` or ``net`` (extra entries such as ``best_prec1`` or ``epoch`` are ignored).
    """
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.is_file():
        raise NotFoundError(
            f"weights file {p} does not exist",
            "pass the path of a checkpoint (.pt/.pth/.th) with --weights PATH",
        )
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except UnpicklingError as exc:
        if "unsupported global" not in str(exc).lower():  # garbage bytes also raise UnpicklingError
            raise InputError(
                f"{p.name} is not a readable PyTorch checkpoint (unpickling failed)",
                "pass a file written by torch.save(model.state_dict(), PATH)",
            ) from exc
        raise InputError(
            f"{p.name} holds pickled Python objects, which weights-only loading refuses",
            "save the weights with torch.save(model.state_dict(), PATH) and pass that file",
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(
            f"{p.name} is not a readable PyTorch checkpoint ({str(exc).splitlines()[0][:120]})",
            "pass a file written by torch.save(model.state_dict(), PATH)",
        ) from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict", "net"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise InputError(
            f"{p.name} does not contain a state_dict",
            "pass a file written by torch.save(model.state_dict(), PATH)",
        )
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(
            f"{p.name} is not a state_dict (non-tensor entries: {', '.join(map(str, bad[:5]))})",
            "pass a state_dict or a dict with it under 'state_dict' or 'model'",
        )
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        key = str(k)
        for prefix in ("module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        out[key] = v
    return out


def _short(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" … ({len(keys)} in all)" if len(keys) > n else "")


def _load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], name: str, source: str) -> None:
    """``model.load_state_dict(state, strict=True)`` with one clear error naming a few bad keys."""
    expected = model.state_dict()
    # BatchNorm fills in a missing num_batches_tracked itself (older checkpoints lack it).
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys: {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_short(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatch (file vs model): {_short(mismatched, 3)}")
        raise InputError(
            f"{source} does not fit {name} — {'; '.join(parts)}",
            f"pass a checkpoint of {name}, or the backbone name the checkpoint was trained with",
        )
    model.load_state_dict(state, strict=True)


# --------------------------------------------------------------------------------------------------
# helpers


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Deterministic random init without disturbing the caller's CPU random stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class ImageTransform:
    """Resize(image_size) → CenterCrop(image_size) → ToTensor → Normalize(mean, std).

    ``__call__`` gives the normalised float tensor, x = (p / 255 − mean) / std per channel.
    :meth:`to_uint8` stops before ToTensor (a uint8 CHW tensor) and :meth:`normalize` finishes the
    job on a batch, with the same floating-point operations in the same order, so the result is
    the same. :func:`~hierqdrant.vision.extract.extract_features` uses the split to move 4× fewer
    bytes from its workers and to normalise on the GPU. A module-level class so workers can pickle it.
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


def _make_transform(
    image_size: int, mean: tuple[float, ...], std: tuple[float, ...], interpolation: str
) -> ImageTransform:
    return ImageTransform(image_size, mean, std, interpolation)


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


def _check_image_size(image_size: int | None) -> None:
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise InputError(f"image_size must be a positive integer, got {image_size!r}", "pass e.g. 224")


def _check_num_classes(num_classes: int | None) -> None:
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise InputError(f"num_classes must be a positive integer, got {num_classes!r}", "pass e.g. 10")


def _torchvision_names() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def available_backbones() -> list[str]:
    """Every name :func:`load_backbone` accepts."""
    return ["pixels", *_CIFAR_DEPTH, *(n for n in _torchvision_names() if n not in _UNSUPPORTED)]


# --------------------------------------------------------------------------------------------------
# pixels and CIFAR ResNets


def _load_pixels(weights: str | None, image_size: int | None) -> Backbone:
    if weights is not None:
        raise InputError("the pixels backbone has no weights", "leave --weights out for --backbone pixels")
    size = image_size or DEFAULT_PIXELS_SIZE
    return Backbone(
        name="pixels",
        module=nn.Flatten().eval(),
        transform=_GrayPixels(size),
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


def _fresh_head(in_features: int, num_classes: int, seed: int) -> nn.Linear:
    with _seeded(seed):
        return nn.Linear(in_features, num_classes)


def _load_cifar(name: str, weights: str | None, image_size: int | None, num_classes: int | None, seed: int) -> Backbone:
    depth = _CIFAR_DEPTH[name]
    sha: str | None = None
    shown: str | None = None
    if weights is None:
        kind: WeightsKind = "random"
        with _seeded(seed):
            model = CifarResNet(depth, num_classes or 10)
    else:
        if not _looks_like_file(weights):
            raise InputError(
                f"{name} takes a local checkpoint file, not {weights!r}",
                "pass the checkpoint path with --weights PATH (e.g. resnet56-4bfd9763.th)",
            )
        kind = "file"
        path = Path(os.path.expanduser(weights))
        state = read_checkpoint(path)
        head = state.get("linear.weight")
        file_classes = int(head.shape[0]) if head is not None and head.ndim == 2 else 10
        model = CifarResNet(depth, file_classes)
        _load_strict(model, state, name, path.name)
        sha, shown = _sha256(path), path.name
        if num_classes is not None and num_classes != file_classes:
            model.linear = _fresh_head(64, num_classes, seed)
    size = image_size or 32
    classifier = model.linear
    model.linear = nn.Identity()  # forward() now returns forward_features()
    model.eval()
    classifier.eval()
    return Backbone(
        name=name,
        module=model,
        transform=_make_transform(size, IMAGENET_MEAN, IMAGENET_STD, "bilinear"),
        feature_dim=CifarResNet.feature_dim,
        image_size=size,
        classifier=classifier,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        weights=shown,
        weights_kind=kind,
        weights_sha256=sha,
        num_classes=int(getattr(classifier, "out_features", 0)) or None,
        seed=seed if kind == "random" else None,
        head_name="linear",
    )


# --------------------------------------------------------------------------------------------------
# torchvision


def _resolve_tv_weights(name: str, weights: str) -> Any:
    """A torchvision weights enum member from ``IMAGENET1K_V2``, ``ResNet50_Weights.IMAGENET1K_V2``
    or ``DEFAULT``."""
    enum_cls = torchvision.models.get_model_weights(name)
    text = weights.strip()
    prefix, _, member = text.rpartition(".")
    members = [m for m in enum_cls.__members__]
    if prefix and prefix.split(".")[-1] != enum_cls.__name__:
        raise InputError(
            f"weights {text!r} are not for {name} (its weights are {enum_cls.__name__}.*)",
            f"use one of {', '.join(members)} or a local checkpoint with --weights PATH",
        )
    lookup = {m.upper(): m for m in members}
    if member.upper() not in lookup:
        raise InputError(
            f"{name} has no weights named {text!r}",
            f"use one of {', '.join(members)}, or pass a local checkpoint file with --weights PATH",
        )
    return enum_cls[lookup[member.upper()]]


def _fetch_tv_weights(enum_member: Any, progress: bool = True) -> Path:
    """The torch-hub cache file of ``enum_member``, downloaded first when missing.

    Fails fast offline: a 5 s TCP probe of the download host comes before the download, and the
    download itself runs with a socket timeout, so no call hangs on a missing network.
    """
    url: str = enum_member.url
    parsed = urlparse(url)
    filename = os.path.basename(parsed.path)
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    cached = cache_dir / filename
    if cached.is_file():
        return cached
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        probe = socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S)
        probe.close()
    except OSError as exc:
        raise InputError(
            f"cannot download the weights {enum_member} from {host} (no network: {exc.__class__.__name__})",
            _OFFLINE_FIX.format(url=url),
        ) from exc
    cache_dir.mkdir(parents=True, exist_ok=True)
    match = _HASH_IN_NAME.search(filename)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(url, str(cached), match.group(1) if match else None, progress=progress)
    except Exception as exc:  # URLError, timeouts, hash mismatch (RuntimeError): all mean "no usable file"
        raise InputError(
            f"downloading the weights {enum_member} from {url} failed ({exc.__class__.__name__}: {exc})",
            _OFFLINE_FIX.format(url=url),
        ) from exc
    finally:
        socket.setdefaulttimeout(old_timeout)
    return cached


@contextlib.contextmanager
def _serve_state_dict(enum_member: Any, state: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Make ``enum_member.get_state_dict()`` return ``state`` while a torchvision builder runs.

    torchvision's own loader would unpickle the whole file; we load it with ``weights_only=True``
    ourselves and hand the tensors to the builder, which still applies its
    weight-specific settings (num_classes, ViT image size, Inception's transform_input, …).
    """
    enum_cls = type(enum_member)
    had_own = "get_state_dict" in enum_cls.__dict__
    previous = enum_cls.__dict__.get("get_state_dict")

    def _get_state_dict(self: Any, *args: Any, **kwargs: Any) -> Mapping[str, torch.Tensor]:
        return state

    enum_cls.get_state_dict = _get_state_dict
    try:
        yield
    finally:
        if had_own:
            enum_cls.get_state_dict = previous
        else:
            delattr(enum_cls, "get_state_dict")


def _tv_defaults(enum_member: Any | None) -> tuple[int, tuple[float, ...], tuple[float, ...], str]:
    """(crop size, mean, std, interpolation) the weights were evaluated with; ImageNet's otherwise."""
    size, interp = DEFAULT_TORCHVISION_SIZE, "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    if enum_member is not None:
        kw = getattr(enum_member.transforms, "keywords", {}) or {}
        crop = kw.get("crop_size")
        if isinstance(crop, int):
            size = crop
        elif isinstance(crop, (list, tuple)) and crop:
            size = int(crop[0])
        mean = tuple(float(v) for v in kw.get("mean", mean))
        std = tuple(float(v) for v in kw.get("std", std))
        mode = kw.get("interpolation")
        if mode is not None:
            interp = str(getattr(mode, "value", mode))
    return size, mean, std, interp


def _build_tv(name: str, seed: int, **kwargs: Any) -> nn.Module:
    with _seeded(seed):
        return torchvision.models.get_model(name, **kwargs)


def _load_torchvision(
    name: str, weights: str | None, image_size: int | None, num_classes: int | None, seed: int
) -> Backbone:
    enum_member: Any | None = None
    sha: str | None = None
    shown: str | None = weights
    resolved: str | None = None
    if weights is None:
        kind: WeightsKind = "random"
        model = _build_tv(name, seed, **({"num_classes": num_classes} if num_classes else {}))
    elif _looks_like_file(weights):
        kind = "file"
        path = Path(os.path.expanduser(weights))
        state = read_checkpoint(path)
        kwargs: dict[str, Any] = {}
        if name in ("inception_v3", "googlenet") and not any(
            k.startswith(("AuxLogits.", "aux1.", "aux2.")) for k in state
        ):
            kwargs["aux_logits"] = False  # fine-tuned checkpoints are often saved without the aux heads
        model = _build_tv(name, seed, **kwargs)
        found = _find_head(model)
        if found is not None:
            head_w = state.get(f"{found[0]}.weight")
            if head_w is not None and head_w.ndim == 2 and head_w.shape[0] != found[1].out_features:
                # A fine-tuned checkpoint: rebuild with its number of classes, read off the file.
                model = _build_tv(name, seed, num_classes=int(head_w.shape[0]), **kwargs)
        _load_strict(model, state, name, path.name)
        sha, shown = _sha256(path), path.name
    else:
        kind = "torchvision"
        enum_member = _resolve_tv_weights(name, weights)
        resolved = str(enum_member)
        cached = _fetch_tv_weights(enum_member)
        try:
            state = torch.load(cached, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise InputError(
                f"the cached weights file {cached} is unreadable ({exc.__class__.__name__})",
                f"delete it so it is downloaded again, or {_OFFLINE_FIX.format(url=enum_member.url)}",
            ) from exc
        with _serve_state_dict(enum_member, state), _seeded(seed):
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
    default_size, mean, std, interp = _tv_defaults(enum_member)
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
        transform=_make_transform(size, mean, std, interp),
        feature_dim=int(head.in_features),
        image_size=size,
        classifier=head,
        mean=mean,
        std=std,
        interpolation=interp,
        weights=shown,
        weights_kind=kind,
        weights_sha256=sha,
        weights_resolved=resolved,
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


def load_backbone(
    name: str,
    weights: str | None = None,
    *,
    image_size: int | None = None,
    num_classes: int | None = None,
    seed: int = RANDOM_INIT_SEED,
) -> Backbone:
    """Build the feature extractor ``name`` (see the module docstring for names and weights).

    ``image_size`` overrides the input size. ``num_classes``: the size of the classifier; without
    weights the network is built with it, and when it differs from the checkpoint's classes the
    loaded classifier is replaced by a fresh ``nn.Linear`` (e.g. to fine-tune on another dataset).
    ``seed`` fixes random initialisation (without weights, and for a fresh classifier).
    """
    if not isinstance(name, str) or not name.strip():
        raise InputError("no backbone name given", "pass e.g. --backbone resnet50")
    key = name.strip().lower()
    _check_image_size(image_size)
    _check_num_classes(num_classes)
    if weights is not None and not str(weights).strip():
        weights = None
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
    kind = desc.get("weights_kind")
    num_classes = desc.get("num_classes")
    seed = int(desc.get("seed", RANDOM_INIT_SEED))
    if name == "pixels":
        bb = load_backbone("pixels", image_size=image_size)
    elif kind == "file":
        if weights_path is None:
            raise InputError(
                f"the model's feature extractor {name} was built from the local weights file "
                f"{desc.get('weights')} (sha256 {str(desc.get('weights_sha256'))[:12]}…)",
                "pass that file with --weights PATH",
            )
        bb = load_backbone(name, weights_path, image_size=image_size, num_classes=num_classes, seed=seed)
        want = desc.get("weights_sha256")
        if want and bb.weights_sha256 != want:
            raise ModelMismatchError(
                f"{Path(weights_path).name} is not the weights file the model was built with "
                f"({desc.get('weights')}, sha256 {str(want)[:12]}…)",
                "pass the same checkpoint that was used when the model was fitted",
            )
    elif kind == "torchvision":
        if weights_path is not None:
            bb = load_backbone(name, weights_path, image_size=image_size, num_classes=num_classes, seed=seed)
            resolved = str(desc.get("weights_resolved") or desc.get("weights"))
            try:
                url = _resolve_tv_weights(name, resolved).url
            except InputError:
                url = ""
            match = _HASH_IN_NAME.search(os.path.basename(urlparse(url).path))
            if match and bb.weights_sha256 and not bb.weights_sha256.startswith(match.group(1)):
                raise ModelMismatchError(
                    f"{Path(weights_path).name} is not the file of the torchvision weights {resolved}",
                    f"pass the file downloaded from {url}",
                )
            bb.weights, bb.weights_kind, bb.weights_resolved = desc.get("weights"), "torchvision", resolved
            bb.weights_sha256 = None
        else:
            bb = load_backbone(
                name,
                str(desc.get("weights_resolved") or desc.get("weights")),
                image_size=image_size,
                num_classes=num_classes,
                seed=seed,
            )
    else:
        bb = load_backbone(name, None, image_size=image_size, num_classes=num_classes, seed=seed)
    mean = tuple(float(v) for v in desc.get("mean", bb.mean))
    std = tuple(float(v) for v in desc.get("std", bb.std))
    interp = str(desc.get("interpolation", bb.interpolation))
    if name != "pixels" and not (_same(mean, bb.mean) and _same(std, bb.std) and interp == bb.interpolation):
        bb.transform = _make_transform(image_size, mean, std, interp)
        bb.mean, bb.std, bb.interpolation = mean, std, interp
    if bb.feature_dim != feature_dim:
        raise ModelMismatchError(
            f"backbone {name} now gives {bb.feature_dim}-d features, the model expects {feature_dim}-d",
            "use the backbone and weights the model was fitted with",
        )
    return bb
