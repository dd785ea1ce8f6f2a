"""Local checkpoint files: read safely, check they fit a network, identify them by sha256.

Checkpoints are read with ``torch.load(..., map_location="cpu", weights_only=True)`` only; a file that
needs arbitrary unpickling (a pickled ``nn.Module``, custom classes) is refused with a hint, never run.

Accepted layouts: a bare state_dict, or a dict holding it under ``state_dict``, ``model``,
``model_state_dict`` or ``net`` (as training scripts save it, next to ``epoch``, ``best_prec1``, …).
The prefixes ``module.`` (DataParallel) and ``_orig_mod.`` (torch.compile) are stripped.

:class:`LocalCheckpoint` bundles what a backbone needs from a file (the tensors, the file name shown in
descriptions, the sha256 that later identifies the same file) and :meth:`LocalCheckpoint.load_into`
loads it strictly, with one error that names the keys that do not fit. :func:`read_head` reads a file's
final linear layer (the network's class scores, a query classifier of its penultimate features) with the
class names a ``hierqdrant train`` checkpoint saves beside it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from pickle import UnpicklingError  # the error weights-only loading raises; nothing is unpickled here
from typing import Any

import numpy as np
import torch
from torch import nn

from hierqdrant.core.classifiers import LinearClassifier
from hierqdrant.core.errors import InputError, NotFoundError

__all__ = [
    "CHECKPOINT_SUFFIXES",
    "CheckpointHead",
    "LocalCheckpoint",
    "file_sha256",
    "load_strict",
    "looks_like_checkpoint_path",
    "read_checkpoint",
    "read_head",
]

#: File endings that mark a ``--weights`` value as a file rather than a torchvision weights name.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".th", ".ckpt", ".bin", ".tar", ".pkl")
_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "net")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_SAVE_HINT = "pass a file written by torch.save(model.state_dict(), PATH)"


def looks_like_checkpoint_path(weights: str) -> bool:
    """True when ``weights`` names a file (it exists, has a path separator or a checkpoint ending)."""
    return (
        os.path.exists(os.path.expanduser(weights))
        or os.sep in weights
        or "/" in weights
        or weights.lower().endswith(CHECKPOINT_SUFFIXES)
    )


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state_dict in a checkpoint file, wrapper prefixes stripped (see the module docstring)."""
    p, obj = _load(path)
    return _state_dict(p, obj)


def _load(path: str | os.PathLike[str]) -> tuple[Path, Any]:
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.is_file():
        raise NotFoundError(
            f"weights file {p} does not exist",
            "pass the path of a checkpoint (.pt/.pth/.th) with --weights PATH",
        )
    try:
        if p.stat().st_size == 0:
            raise InputError(f"{p.name} is empty (0 bytes): not a PyTorch checkpoint", _SAVE_HINT)
        return p, torch.load(p, map_location="cpu", weights_only=True)
    except UnpicklingError as exc:
        if "unsupported global" not in str(exc).lower():  # garbage bytes also raise UnpicklingError
            raise InputError(f"{p.name} is not a readable PyTorch checkpoint (unpickling failed)", _SAVE_HINT) from exc
        raise InputError(
            f"{p.name} holds pickled Python objects, which weights-only loading refuses",
            "save the weights with torch.save(model.state_dict(), PATH) and pass that file",
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, IndexError) as exc:
        if isinstance(exc, InputError):
            raise
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise InputError(f"{p.name} is not a readable PyTorch checkpoint ({reason})", _SAVE_HINT) from exc


def _state_dict(p: Path, obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise InputError(f"{p.name} does not contain a state_dict", _SAVE_HINT)
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(
            f"{p.name} is not a state_dict (non-tensor entries: {', '.join(map(str, bad[:5]))})",
            "pass a state_dict or a dict with it under 'state_dict' or 'model'",
        )
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        key = str(k)
        for prefix in _WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
        out[key] = v
    return out


@dataclass
class CheckpointHead:
    """A checkpoint's final linear layer: ``classifier`` (K, feature_dim) on the penultimate features, the
    state_dict key of its weight, and what a ``hierqdrant train`` checkpoint says beside it (class names,
    objective; None for other files)."""

    classifier: LinearClassifier
    key: str
    classes: list[str] | None = None
    objective: str | None = None

    def check(self, class_names: list[str], source: str) -> LinearClassifier:
        """The classifier, when its classes are ``class_names`` (same count; same names where the file
        names them); a head trained for semantic embeddings is not one (its outputs are no class scores)."""
        fix = "use a checkpoint trained on these classes (hierqdrant train), or --query-classifier tied"
        if self.objective is not None and self.objective != "ce":
            raise InputError(
                f"{source} was trained with the {self.objective} objective: its head gives no class scores", fix
            )
        k = self.classifier.num_classes
        if k != len(class_names):
            raise InputError(f"the final layer of {source} scores {k} classes, the data has {len(class_names)}", fix)
        if self.classes is not None and list(self.classes) != list(class_names):
            diff = next(i for i, (a, b) in enumerate(zip(self.classes, class_names, strict=True)) if a != b)
            raise InputError(
                f"{source} was trained on other classes (or another order): class {diff} is "
                f"{self.classes[diff]!r} there, {class_names[diff]!r} here",
                fix,
            )
        return self.classifier


def read_head(path: str | os.PathLike[str], feature_dim: int) -> CheckpointHead:
    """The final linear layer of a checkpoint: the last 2-D weight in the state_dict that takes
    ``feature_dim``-d inputs (``fc.weight``, ``linear.weight``, ``classifier.1.weight``, …), with its bias."""
    p, obj = _load(path)
    state = _state_dict(p, obj)
    found = [k for k, v in state.items() if k.endswith("weight") and v.ndim == 2 and v.shape[1] == feature_dim]
    if not found:
        raise InputError(
            f"{p.name} has no final linear layer on {feature_dim}-d features",
            "pass the checkpoint of the network these features came from",
        )
    key = found[-1]
    weight = state[key].detach().to(torch.float64).numpy()
    bias_t = state.get(key[: -len("weight")] + "bias")
    bias = bias_t.detach().to(torch.float64).numpy() if bias_t is not None else np.zeros(weight.shape[0])
    meta = obj if isinstance(obj, Mapping) else {}
    classes = meta.get("classes")
    objective = meta.get("objective")
    return CheckpointHead(
        classifier=LinearClassifier(weight, bias),
        key=key,
        classes=[str(c) for c in classes] if isinstance(classes, list) else None,
        objective=str(objective) if isinstance(objective, str) else None,
    )


def _first_few(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" … ({len(keys)} in all)" if len(keys) > n else "")


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], arch: str, source: str) -> None:
    """``model.load_state_dict(state, strict=True)`` with one clear error naming a few bad keys.

    ``arch`` (the backbone name) and ``source`` (the file name) only word the error.
    """
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
            parts.append(f"missing keys: {_first_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_first_few(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatch (file vs model): {_first_few(mismatched, 3)}")
        raise InputError(
            f"{source} does not fit {arch} — {'; '.join(parts)}",
            f"pass a checkpoint of {arch}, or the backbone name the checkpoint was trained with",
        )
    model.load_state_dict(state, strict=True)


@dataclass
class LocalCheckpoint:
    """A checkpoint file read with :func:`read_checkpoint`: its tensors, file name and sha256."""

    path: Path
    state: dict[str, torch.Tensor]

    @classmethod
    def open(cls, weights: str | os.PathLike[str]) -> LocalCheckpoint:
        path = Path(os.path.expanduser(os.fspath(weights)))
        return cls(path=path, state=read_checkpoint(path))

    @property
    def file_name(self) -> str:
        """The name stored in a backbone description (never the directory, which is machine-specific)."""
        return self.path.name

    def sha256(self) -> str:
        return file_sha256(self.path)

    def classes(self, head_weight_key: str) -> int | None:
        """Rows of the 2-D classifier weight ``head_weight_key`` (the classes the file was trained on)."""
        weight = self.state.get(head_weight_key)
        return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None

    def load_into(self, model: nn.Module, arch: str) -> None:
        """Strict load into ``model`` (see :func:`load_strict`)."""
        load_strict(model, self.state, arch, self.file_name)
