"""What a collection's model was fitted on: a fingerprint of the fit's inputs, stored in the info dict.

An ingest run again — after a stop, on another machine, with another BLAS or torch — continues a collection
when it would fit the model on the same inputs, not when a refit reproduces the model's last bits (a model
id hashes the arrays, and another BLAS kernel gives other last bits). The fingerprint (DESIGN.md §2.6):

- ``files``: the labelled training items (labelled, split not ``test``: what the fit uses) by key, with a
  sha256 of each image file's content (hashed in a thread pool; not the embedded features, which torch
  recomputes with other last bits elsewhere), or, for a features file, of the features rows themselves
  (read from the file: bit for bit the same);
- ``labels``: the class list and each of those items' label name and split;
- ``extractor``: a digest of the extractor's identity (:func:`hierqdrant.vision.extractor.identity`);
- ``settings``: the fit settings (builder, threshold, α, the taxonomy file's content, PCA, covariance,
  leaf sources, sub-classes, the head checkpoint's content, tuning), in the clear, so that a refusal names
  the one that differs.

It is small (digests, not a digest per file). :func:`differences` says in words what differs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from hierqdrant.core.errors import InputError
from hierqdrant.core.hierarchy import Hierarchy
from hierqdrant.vision.extractor import identity

__all__ = ["VERSION", "differences", "fit_inputs", "leaf_sources_differ", "recorded", "settings_of"]

VERSION = 1
_CHUNK = 1 << 20


def fit_inputs(
    keys: Sequence[str],
    labels: Sequence[int | None],
    splits: Sequence[str | None],
    class_names: Sequence[str],
    rows: Sequence[int],
    extractor: Mapping[str, Any],
    opts: Any,
    *,
    paths: Sequence[str | os.PathLike[str]] | None = None,
    features: np.ndarray | None = None,
) -> dict[str, Any]:
    """The fingerprint of a fit on the items ``rows`` (their ``keys``, ``labels``, ``splits``): of the image
    files ``paths`` (one per item) when given, else of the ``features`` rows. ``opts``: ingest's options
    (:class:`~hierqdrant.pipelines.ingest.IngestOptions`, read only)."""
    order = sorted(rows, key=lambda i: keys[i])
    if paths is not None:
        contents = _file_digests([paths[i] for i in order])
        files = _digest("".join(f"{keys[i]}\t{d}\n" for i, d in zip(order, contents, strict=True)))
        source = "images"
    else:
        assert features is not None
        block = np.ascontiguousarray(features[np.asarray(order, dtype=np.int64)])
        h = hashlib.sha256(json.dumps([str(block.dtype), list(block.shape), [keys[i] for i in order]]).encode())
        h.update(block.tobytes())
        files, source = h.hexdigest(), "features"
    named = [[keys[i], class_names[_label(labels[i])], splits[i]] for i in order]
    return {
        "version": VERSION,
        "source": source,
        "items": len(order),
        "files": files,
        "labels": _digest(_canonical({"classes": list(class_names), "items": named})),
        "extractor": _digest(_canonical(identity(extractor))),
        "settings": settings_of(opts),
    }


def settings_of(opts: Any) -> dict[str, Any]:
    """The fit settings of ingest's options as JSON values (files by their content's digest)."""
    tune = bool(getattr(opts, "tune", False))
    out = {
        "builder": opts.builder,
        "threshold": float(opts.threshold),
        "alpha": float(opts.alpha),
        "taxonomy": _taxonomy(opts.taxonomy),
        "pca": opts.pca,
        "covariance": opts.covariance,
        "query_classifier": opts.query_classifier,
        "leaf_from": opts.leaf_from,
        "split_classes": bool(getattr(opts, "split_classes", False)),
        "head": _file_or_name(getattr(opts, "head", None)),
        "tune": tune,
        "tune_metric": opts.tune_metric if tune else None,
        "pinned": sorted(opts.pinned) if tune else None,  # what tuning keeps instead of searching
    }
    return json.loads(json.dumps(out, default=str))  # as it reads back from the info dict (tuples as lists, …)


def recorded(info: Mapping[str, Any] | None, now: Mapping[str, Any]) -> dict[str, Any] | None:
    """The fingerprint an info dict records when it can be compared with ``now``; None without one of this
    version (a collection of an older version) or of another kind of source (a folder of images, now a
    features file): ingest then refits and compares model ids, as before fingerprints."""
    value = (info or {}).get("fit_inputs")
    if not isinstance(value, Mapping) or value.get("version") != VERSION or value.get("source") != now["source"]:
        return None
    return dict(value)


_FLAGS = {
    "builder": "--builder",
    "threshold": "--threshold",
    "alpha": "--alpha",
    "pca": "--pca",
    "covariance": "the covariance estimator",
    "split_classes": "--split-classes",
    "tune": "--tune",
    "tune_metric": "--tune-metric",
}
_LEAF_SOURCES = ("query_classifier", "leaf_from")


def differences(then: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between the fingerprint ``then`` (the stored model's) and ``now``, in words; empty when
    they are equal. The leaf sources are left to the caller (it words them as the model does)."""
    out: list[str] = []
    what = "images" if now.get("source") == "images" else "features"
    if then.get("files") != now.get("files"):
        n, m = now.get("items"), then.get("items")
        count = f"{n} now, {m} when it was fitted" if n != m else f"{n} as before, other names or contents"
        out.append(f"the labelled {what} differ ({count})")
    elif then.get("labels") != now.get("labels"):
        out.append(f"the classes, labels or splits of the labelled {what} differ")
    if then.get("extractor") != now.get("extractor"):
        out.append("the feature extractor differs")
    was, is_ = then.get("settings") or {}, now.get("settings") or {}
    for name in [*is_, *(k for k in was if k not in is_)]:
        if name in _LEAF_SOURCES or was.get(name) == is_.get(name):
            continue
        if name in ("tune_metric", "pinned") and was.get("tune") != is_.get("tune"):
            continue  # --tune itself differs: said once
        if name in ("taxonomy", "head"):
            if was.get(name) is not None and is_.get(name) is not None:
                out.append(f"the --{name} file differs")
            else:
                out.append(f"--{name} is {_given(is_.get(name))} now, {_given(was.get(name))} when it was fitted")
        elif name == "pinned":
            out.append(f"--tune keeps {_pinned(is_.get(name))} fixed now, {_pinned(was.get(name))} when it was fitted")
        else:
            flag = _FLAGS.get(name, f"--{name.replace('_', '-')}")
            out.append(f"{flag} is {_shown(name, is_.get(name))} now, {_shown(name, was.get(name))} when it was fitted")
    return out


def leaf_sources_differ(then: Mapping[str, Any], now: Mapping[str, Any]) -> bool:
    """Whether the fingerprints' leaf sources (query classifier, leaf_from) differ."""
    was, is_ = then.get("settings") or {}, now.get("settings") or {}
    return any(was.get(k) != is_.get(k) for k in _LEAF_SOURCES)


# ---------------------------------------------------------------------------------------------------------
# helpers


def _label(label: int | None) -> int:
    assert label is not None  # the fit's rows are labelled
    return int(label)


def _file_digests(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """sha256 of each file's content, in a thread pool (hashing and reading release the GIL)."""
    if len(paths) < 16:
        return [_file_digest(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(_file_digest, paths, chunksize=64))


def _file_digest(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as e:  # e.g. made unreadable since it was embedded (its features came from the cache)
        raise InputError(
            f"cannot read {path} to fingerprint what the model is fitted on: {e.strerror or e}",
            "make it readable, or move it out of the source folder",
        ) from None
    return h.hexdigest()


def _file_or_name(path: Any) -> str | None:
    """A file's content digest; a name that is no file as it is (the fit refuses it, or it is a name)."""
    if path is None:
        return None
    p = Path(path).expanduser()
    return "sha256:" + _file_digest(p) if p.is_file() else str(path)


def _taxonomy(value: Any) -> str | None:
    if isinstance(value, Hierarchy):
        return "sha256:" + _digest(value.to_json())
    return _file_or_name(value)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _shown(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "all" if name == "pca" else "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _given(value: Any) -> str:
    return "given" if value else "not given"


def _pinned(value: Any) -> str:
    return ", ".join(value) if value else "nothing"
