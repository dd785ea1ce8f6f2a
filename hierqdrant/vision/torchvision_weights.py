"""Published torchvision weights by name: resolve, download once, read safely, hand to the builder.

A weights name is ``IMAGENET1K_V2``, ``ResNet50_Weights.IMAGENET1K_V2`` or ``DEFAULT`` (case-insensitive).
The file is downloaded once into the torch-hub cache (``$TORCH_HOME/hub/checkpoints``) and checked
against the hash prefix in its file name. Offline the download fails fast: a 5 s TCP probe of the host
comes first, and the download itself runs with a socket timeout, so no call hangs on a missing network.

torchvision's own loader would unpickle the whole file; here it is read with ``weights_only=True`` and
the tensors are handed to torchvision's builder (:func:`serve_state_dict`), which still applies its
weight-specific settings (num_classes, ViT image size, Inception's transform_input, …).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision

from hierqdrant.core.errors import InputError
from hierqdrant.vision.preprocessing import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "cache_file",
    "fetch_weights_file",
    "hash_prefix",
    "published_url",
    "read_published_state",
    "resolve_weights",
    "serve_state_dict",
    "weights_preprocessing",
]

#: Input size of a torchvision model whose weights do not name one (and of randomly initialised ones).
DEFAULT_IMAGE_SIZE = 224
#: Seconds to wait for the download host to answer before declaring the machine offline.
_PROBE_TIMEOUT_S = 5.0
#: Socket timeout during the download itself, so a stalled transfer fails instead of hanging.
_DOWNLOAD_TIMEOUT_S = 60.0
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")
_OFFLINE_FIX = (
    "pass --weights FILE (a local checkpoint) or --weights random for an untrained network "
    "(or download {url} elsewhere and put it in the cache folder)"
)


def resolve_weights(name: str, weights: str) -> Any:
    """The torchvision weights enum member of model ``name`` that ``weights`` names."""
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


def published_url(name: str, weights: str) -> str:
    """The download URL of the weights ``weights`` of ``name``; ``""`` when they do not resolve."""
    try:
        return str(resolve_weights(name, weights).url)
    except InputError:
        return ""


def hash_prefix(url: str) -> str | None:
    """The sha256 prefix torchvision puts in its file names (``resnet50-11ad3fa6.pth``), if any."""
    match = _HASH_IN_NAME.search(os.path.basename(urlparse(url).path))
    return match.group(1) if match else None


def cache_file(enum_member: Any) -> Path:
    """Where torch hub keeps the file of ``enum_member``: ``torch.hub.get_dir()/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(enum_member.url).path)


def _home_relative(path: Path) -> str:
    """``path`` with the home folder written ``~`` (shorter in one-line errors)."""
    try:
        return "~/" + path.relative_to(Path.home()).as_posix()
    except ValueError:
        return str(path)


def _weights_label(enum_member: Any, model: str | None) -> str:
    """``resnet50's ImageNet weights (IMAGENET1K_V2)``, for messages."""
    member = str(getattr(enum_member, "name", enum_member))
    owner = f"{model}'s " if model else f"the {type(enum_member).__name__} "
    data = "ImageNet " if member.upper().startswith("IMAGENET") else ""
    return f"{owner}{data}weights ({member})"


def fetch_weights_file(enum_member: Any, progress: bool = True, model: str | None = None) -> Path:
    """The torch-hub cache file of ``enum_member``, downloaded first when missing (fails fast offline).

    ``model`` (the backbone name) only words the errors.
    """
    url: str = enum_member.url
    parsed = urlparse(url)
    cached = cache_file(enum_member)
    cache_dir = cached.parent
    if cached.is_file():
        return cached
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        probe = socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S)
        probe.close()
    except OSError as exc:
        raise InputError(
            f"{_weights_label(enum_member, model)} are not in the cache ({_home_relative(cached)}) and cannot "
            f"be downloaded: no network ({host} unreachable)",
            _OFFLINE_FIX.format(url=url),
        ) from exc
    cache_dir.mkdir(parents=True, exist_ok=True)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(url, str(cached), hash_prefix(url), progress=progress)
    except Exception as exc:  # URLError, timeouts, hash mismatch (RuntimeError): all mean "no usable file"
        raise InputError(
            f"downloading {_weights_label(enum_member, model)} from {url} into {_home_relative(cache_dir)} failed "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})",
            _OFFLINE_FIX.format(url=url),
        ) from exc
    finally:
        socket.setdefaulttimeout(old_timeout)
    return cached


def read_published_state(enum_member: Any, model: str | None = None) -> Mapping[str, torch.Tensor]:
    """The state_dict of ``enum_member`` (fetched when missing), read with ``weights_only=True``."""
    cached = fetch_weights_file(enum_member, model=model)
    try:
        state: Mapping[str, torch.Tensor] = torch.load(cached, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(
            f"the cached weights file {cached} is unreadable ({exc.__class__.__name__})",
            f"delete it so it is downloaded again, or {_OFFLINE_FIX.format(url=enum_member.url)}",
        ) from exc
    return state


@contextlib.contextmanager
def serve_state_dict(enum_member: Any, state: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Make ``enum_member.get_state_dict()`` return ``state`` while a torchvision builder runs."""
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


def weights_preprocessing(enum_member: Any | None) -> tuple[int, tuple[float, ...], tuple[float, ...], str]:
    """(crop size, mean, std, interpolation) the weights were evaluated with; ImageNet's otherwise."""
    size, interp = DEFAULT_IMAGE_SIZE, "bilinear"
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
