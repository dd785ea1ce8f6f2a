"""Robust image decoding: every file either becomes an 8-bit RGB ``PIL.Image`` or a short reason.

Datasets scraped from the web or copied between machines contain files that are not what their
extension says (HTML error pages saved as ``.jpg``), half-written files, 1×1 tracking pixels,
unreadable files, symlink loops and things that are not files at all (a FIFO or a device named
``x.png``, which a plain ``open`` would wait on forever). :func:`load_rgb` turns each of these into an
:class:`ImageDecodeError` with a short reason so that a caller can skip the file and go on.

Decisions:

* ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off and every image is decoded eagerly with
  ``img.load()``: a truncated JPEG would otherwise be padded with grey and silently give a wrong
  feature vector.
* EXIF orientation is *not* applied, like ``torchvision.datasets.folder.pil_loader`` with which the
  checkpoints were trained, so training and query images go through the same pixels.
* Only the first frame of multi-frame files (GIF, TIFF) is used.
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MIN_SIDE",
    "ImageDecodeError",
    "is_image_file",
    "load_rgb",
    "open_image_file",
    "os_error_reason",
    "regular_file_reason",
    "MAX_PIXELS",
    "header_pixels_reason",
    "max_pixels",
    "too_many_pixels",
]

#: File extensions (lower case, with the dot) treated as images when a dataset is discovered.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

#: Smallest accepted side in pixels. A 1-pixel side is a tracking pixel or a placeholder, not a
#: picture: resized to the network's input it becomes a flat colour whose feature vector says
#: nothing about content but still lands among real neighbours, so such files are skipped.
MIN_SIDE = 2

#: Most pixels an image may have (width × height), unless ``$HIERQDRANT_MAX_PIXELS`` says otherwise: a
#: 100-megapixel PNG decodes to 300 MB of RGB (and a few times that while converting) in every worker, for a
#: feature computed from a 224-pixel thumbnail. Larger images are skipped and reported, never decoded.
MAX_PIXELS = 50_000_000

_WHITE = (255, 255, 255)


def max_pixels() -> int:
    """The pixel cap: ``$HIERQDRANT_MAX_PIXELS`` (a positive integer) or :data:`MAX_PIXELS`."""
    raw = os.environ.get("HIERQDRANT_MAX_PIXELS", "").strip().replace("_", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else MAX_PIXELS


def too_many_pixels(width: int, height: int) -> str | None:
    """The skip reason for an image of ``width`` × ``height`` above :func:`max_pixels`, else None."""
    cap = max_pixels()
    if width * height <= cap:
        return None
    return (
        f"too many pixels ({width}×{height} = {width * height / 1e6:.0f} MP; at most {cap / 1e6:g} MP, "
        "set HIERQDRANT_MAX_PIXELS to allow more)"
    )


def header_pixels_reason(data: bytes) -> str | None:
    """:func:`too_many_pixels` from an encoded image's header (nothing is decoded); None when the header
    does not say (the decoder then decides)."""
    import io

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return too_many_pixels(*img.size)
    except Image.DecompressionBombError as exc:
        return f"too many pixels ({exc})"
    except Exception:  # noqa: BLE001 - an unreadable header is the decoder's to report
        return None


class ImageDecodeError(Exception):
    """A file that cannot be used as an image; ``reason`` is short and meant for a skip report."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def is_image_file(name: str | os.PathLike[str]) -> bool:
    """True when the file name ends with one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(os.fspath(name))[1].lower() in IMAGE_EXTENSIONS


def os_error_reason(exc: OSError) -> str:
    """A short reason for an operating-system error on opening or listing a path, for skip reports."""
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if isinstance(exc, PermissionError) or exc.errno == errno.EACCES:
        return "unreadable (permission denied)"
    if isinstance(exc, FileNotFoundError):
        return "missing file (not found, or a broken symlink)"
    if isinstance(exc, IsADirectoryError):
        return "not a file (a directory)"
    return f"unreadable ({exc.strerror or exc})"


def _not_regular(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "not a file (a directory)"
    if stat.S_ISFIFO(mode):
        kind = "a FIFO"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    else:
        kind = "a special file"
    return f"not a regular file ({kind})"


def regular_file_reason(path: str | os.PathLike[str]) -> str | None:
    """None when ``path`` (symlinks followed) is a regular file; else a short reason for a skip report
    (``not a regular file (a FIFO)``, a missing file, …). Only ``stat``: nothing is opened."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return os_error_reason(exc)
    return None if stat.S_ISREG(mode) else _not_regular(mode)


def open_image_file(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened for binary reading, or :class:`ImageDecodeError` with a short reason.

    Never blocks: a FIFO, device or socket is refused from ``stat`` before any ``open``, and the open itself
    is non-blocking and checked again with ``fstat`` (a file swapped for a FIFO in between), so only a regular
    file is ever read.
    """
    reason = regular_file_reason(path)
    if reason is not None:
        raise ImageDecodeError(reason)
    try:
        fh = open(path, "rb", opener=_open_nonblocking)
    except OSError as exc:
        raise ImageDecodeError(os_error_reason(exc)) from exc
    try:
        mode = os.fstat(fh.fileno()).st_mode
    except OSError as exc:
        fh.close()
        raise ImageDecodeError(os_error_reason(exc)) from exc
    if not stat.S_ISREG(mode):
        fh.close()
        raise ImageDecodeError(_not_regular(mode))
    return fh


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def _composite_on_white(img: Image.Image) -> Image.Image:
    """Flatten transparency onto white: out = a·rgb + (1 − a)·255 (what a viewer shows)."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, _WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_uint8_gray(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scale a single-channel integer or float array to 0..255.

    * ``I;16*`` (16-bit): v8 = round(v16 / 257), so 65535 → 255 and 0 → 0 (absolute scale kept).
    * ``I`` (32-bit int): Pillow opens 16-bit PNG/TIFF files in this mode, so values within
      0..65535 are scaled as 16-bit; anything else is min–max scaled.
    * ``F`` (float): values within [0, 1] are multiplied by 255; anything else is min–max scaled.
      Non-finite values become 0.
    """
    a = arr.astype(np.float64)
    finite = np.isfinite(a)
    a = np.where(finite, a, 0.0)
    if not finite.any():
        return np.zeros(arr.shape, dtype=np.uint8)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and hi <= 65535):
        scaled = a / 257.0
    elif mode == "F" and lo >= 0.0 and hi <= 1.0:
        scaled = a * 255.0
    elif hi > lo:
        scaled = (a - lo) / (hi - lo) * 255.0
    else:
        scaled = np.zeros_like(a)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _convert_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (see the module docstring for the rules)."""
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        return _composite_on_white(img)
    if mode == "P":
        # A palette with a transparent index is composited like RGBA.
        if "transparency" in img.info:
            return _composite_on_white(img)
        return img.convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = _to_uint8_gray(np.asarray(img), mode)
        return Image.fromarray(gray).convert("RGB")
    if mode in ("1", "L", "CMYK", "YCbCr", "RGBX"):
        return img.convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageDecodeError(f"unsupported colour mode {mode!r}") from exc


def load_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Decode ``path`` fully and return it as an 8-bit RGB image (file closed, pixels in memory).

    Raises :class:`ImageDecodeError` with a short reason for: a symlink loop, an unreadable or
    missing file, something that is not a regular file (a FIFO, a device: never opened, see
    :func:`open_image_file`), a file that is not an image, a truncated or corrupt image, an image with a
    side smaller than :data:`MIN_SIDE` pixels, or an unsupported colour mode.
    """
    with open_image_file(path) as fh:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(fh)
        except UnidentifiedImageError as exc:
            raise ImageDecodeError("not an image (unrecognised file format)") from exc
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError("too many pixels (decompression-bomb guard)") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageDecodeError(f"corrupt image header ({exc})") from exc
        with img:
            w, h = img.size
            if min(w, h) < MIN_SIDE:
                raise ImageDecodeError(f"too small ({w}×{h} px; need at least {MIN_SIDE} px a side)")
            big = too_many_pixels(w, h)  # the header's size, before a single pixel is decoded
            if big is not None:
                raise ImageDecodeError(big)
            try:
                img.load()
            except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
                raise ImageDecodeError(f"truncated or corrupt ({exc})") from exc
            return _convert_rgb(img)
