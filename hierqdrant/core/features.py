"""The features file: the interchange format for precomputed features across the CLI.

An ``.npz`` (read with ``allow_pickle=False``) holding

* ``features`` — (N, D) float,
* ``labels`` — (N,) int class indices (optional: unlabelled data),
* ``classes`` — (K,) class names (optional),
* ``paths`` — (N,) image paths or keys (optional),
* ``splits`` — (N,) ``train``/``test`` (optional).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hierqdrant.core.errors import InputError, NotFoundError
from hierqdrant.core.fileio import atomic_writer
from hierqdrant.core.names import check_class_names, is_utf8, printable

LOAD_FIX = "pass an image folder or a features file made by `hierqdrant embed`"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # an .npz is a zip archive (the second: an empty one)
_SIGNATURES = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x93NUMPY", "a bare .npy array, not an .npz archive"),
    (b"%PDF", "a PDF document"),
)


@dataclass
class FeatureSet:
    features: np.ndarray
    labels: np.ndarray | None = None
    classes: list[str] | None = None
    paths: list[str] | None = None
    splits: list[str] | None = None

    def __post_init__(self) -> None:
        self.features = check_features(self.features)
        n = self.features.shape[0]
        if self.labels is not None:
            self.labels = check_labels(
                self.labels, n, len(self.classes) if self.classes is not None else None
            )
        for name in ("paths", "splits"):
            values = getattr(self, name)
            if values is not None:
                values = [str(v) for v in values]
                if len(values) != n:
                    raise InputError(f"{len(values)} {name} for {n} feature rows", "give one entry per row")
                setattr(self, name, values)
        if self.classes is not None:
            self.classes = check_class_names(self.classes, "the features file's classes")
        bad = [s for s in self.splits or () if not is_utf8(s)]
        if bad:
            raise InputError(f"split {printable(bad[0])!r} is not valid UTF-8", "use train and test")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_classes(self) -> int:
        if self.classes is not None:
            return len(self.classes)
        if self.labels is None or self.labels.size == 0:
            return 0
        return int(self.labels.max()) + 1

    @property
    def class_names(self) -> list[str]:
        return self.classes if self.classes is not None else [str(i) for i in range(self.num_classes)]

    def subset(self, index: np.ndarray) -> FeatureSet:
        idx = np.asarray(index)
        return FeatureSet(
            features=self.features[idx],
            labels=None if self.labels is None else self.labels[idx],
            classes=self.classes,
            paths=None if self.paths is None else [self.paths[i] for i in np.arange(len(self))[idx]],
            splits=None if self.splits is None else [self.splits[i] for i in np.arange(len(self))[idx]],
        )

    def save(self, path: str | Path) -> None:
        """Write atomically (a temporary file renamed into place)."""
        arrays: dict[str, np.ndarray] = {"features": self.features}
        if self.labels is not None:
            arrays["labels"] = self.labels
        if self.classes is not None:
            arrays["classes"] = np.asarray(self.classes, dtype=str)
        if self.paths is not None:
            arrays["paths"] = np.asarray(self.paths, dtype=str)
        if self.splits is not None:
            arrays["splits"] = np.asarray(self.splits, dtype=str)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(target) as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path, *, fix: str = LOAD_FIX) -> FeatureSet:
        """Read a features file; anything else (an image, a text file, a bare ``.npy``, a damaged archive)
        is refused with one line saying what the file is and, in ``fix``, what to pass instead."""
        p = Path(path)
        if not p.is_file():
            raise NotFoundError(f"features file {p} does not exist", "pass an existing .npz")
        try:
            with open(p, "rb") as fh:
                head = fh.read(16)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise InputError(f"cannot read {p} ({reason})", "check its permissions") from None
        if not head.startswith(_ZIP_MAGIC):
            raise InputError(f"{p} is not a features .npz file ({_what_file(head)})", fix)
        try:
            with np.load(p, allow_pickle=False) as data:
                if "features" not in data.files:
                    raise InputError(
                        f"{p} has no 'features' array", "save features as np.savez(path, features=...)"
                    )
                return cls(
                    features=data["features"],
                    labels=data["labels"] if "labels" in data.files else None,
                    classes=data["classes"].tolist() if "classes" in data.files else None,
                    paths=data["paths"].tolist() if "paths" in data.files else None,
                    splits=data["splits"].tolist() if "splits" in data.files else None,
                )
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, (zipfile.BadZipFile, EOFError)):
                reason = "truncated or corrupt zip archive"
            elif "allow_pickle" in reason or "pickled" in reason:
                reason = "it holds Python objects; pickled data is never loaded"
            raise InputError(
                f"{p} is a damaged or foreign .npz features file ({reason})",
                "re-create it with `hierqdrant embed` (or np.savez with numeric arrays)",
            ) from None


def _what_file(head: bytes) -> str:
    """What the first bytes of a file say it is, for an error message."""
    if not head:
        return "it is empty"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "it is a WebP image"
    for magic, kind in _SIGNATURES:
        if head.startswith(magic):
            return f"it is {kind}"
    if head[:1] == b"\x80" and head[1:2] in {bytes([v]) for v in range(2, 6)}:
        return "it is a Python pickle"
    try:
        text: str | None = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a character cut at the end of the 16 bytes is still text
        text = head[: exc.start].decode("utf-8") if exc.start >= len(head) - 3 else None
    if text is not None and all(c.isprintable() or c in "\t\r\n" for c in text):
        return "it is a text file"
    return "it is not a zip archive"


def check_features(features: np.ndarray, name: str = "features") -> np.ndarray:
    """A finite (N, D) float array, or an InputError naming the first bad row."""
    x = np.asarray(features)
    if x.ndim != 2:
        raise InputError(f"{name} must be a 2-D array (N, D), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise InputError(f"{name} must be real numbers, got dtype {x.dtype}")
    x = x.astype(np.float32 if x.dtype == np.float32 else np.float64, copy=False)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        rows = np.flatnonzero(~finite)
        raise InputError(
            f"{name} contain NaN or inf in {rows.size} rows (first: {rows[:5].tolist()})",
            "drop or repair those rows",
        )
    check_scale(x, name)
    return x


#: Beyond these magnitudes squares and covariances of float64 values overflow to inf or underflow to 0.
HUGE, TINY = 1e150, 1e-150


def check_scale(x: np.ndarray, name: str = "features") -> None:
    """Refuse values whose squares overflow (|x| above 1e150) or underflow (all of them below 1e-150):
    PCA, the covariances and the distances square them. One line naming the largest magnitude."""
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak > HUGE:
        raise InputError(
            f"{name} are too large to compute with (largest |value| {peak:.3g}): their squares overflow",
            "rescale them (e.g. divide by their largest value); cosine rankings do not change with the scale",
        )
    if 0.0 < peak < TINY:
        raise InputError(
            f"{name} are too small to compute with (largest |value| {peak:.3g}): their squares underflow to 0",
            "rescale them (e.g. divide by their largest value); cosine rankings do not change with the scale",
        )


def check_labels(labels: np.ndarray, n: int, num_classes: int | None = None) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise InputError(f"labels must be 1-D, got shape {y.shape}")
    if y.shape[0] != n:
        raise InputError(f"{y.shape[0]} labels for {n} feature rows", "give one label per row")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise InputError(f"labels must be integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size:
        top = num_classes if num_classes is not None else None
        bad = np.flatnonzero((y < 0) | ((y >= top) if top is not None else False))
        if bad.size:
            values = np.unique(y[bad])[:5].tolist()
            if top is None:  # no class list: any label ≥ 0 names a class, so only negative ones are wrong
                raise InputError(
                    f"negative labels at rows {bad[:5].tolist()} (values {values}): labels are class indices 0, 1, …",
                    "label the classes 0…K-1 (an unlabelled row goes in another file, without labels)",
                )
            raise InputError(
                f"labels out of range at rows {bad[:5].tolist()} (values {values}; classes are 0…{top - 1})",
                "labels must index the class list",
            )
    return y


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()
