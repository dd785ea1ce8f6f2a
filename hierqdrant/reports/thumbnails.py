"""Finding a result's image file and making a small thumbnail of it (Pillow), inlined as a data URI.

Points written by ``hierqdrant ingest`` from an image folder carry ``path``: the image's key relative
to the folder that was ingested. The folder itself is not stored, so :class:`ImageFinder` tries a few
roots in order: the ones given (``--image-root``), the folders above the query images (a query from
``digits/test/seven/`` finds ``digits/train/...``), and the working directory.

A payload is data, not a permission: a report inlines only files inside a root. A relative key that
climbs out of its root (``../../home/me/id.png``) is not found, and an absolute ``path`` only under a
folder given with ``--image-root`` (never an arbitrary file of the machine, e.g. ``/etc/…``).
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["ImageFinder", "data_uri", "thumbnail"]

#: Edge of a result thumbnail in pixels (the query's is drawn larger by the page, from the same data).
THUMB = 96
#: Folders above a query image that are tried as the ingested folder's root.
_PARENT_LEVELS = 4


class ImageFinder:
    """Resolve payload ``path`` keys to image files under one of several candidate roots."""

    def __init__(self, roots: Iterable[Path] = (), near: Iterable[str | Path] = ()) -> None:
        candidates: list[Path] = [Path(r) for r in roots]
        #: The folders given (--image-root): the only ones an absolute payload path may point into.
        self.given = [Path(os.path.abspath(r.resolve() if r.exists() else r)) for r in candidates]
        for item in near:  # the folders above each query input
            p = Path(item)
            candidates.extend(list(p.parents)[:_PARENT_LEVELS] if p.suffix else [p, *list(p.parents)[:_PARENT_LEVELS]])
        candidates.append(Path.cwd())
        seen: set[Path] = set()
        self.roots: list[Path] = []
        for c in candidates:
            r = c.resolve() if c.exists() else c
            if r not in seen and r.is_dir():
                seen.add(r)
                self.roots.append(r)
        self._hit_root: Path | None = None  # the root that resolved the last key: tried first next time
        self.found = 0
        self.missed = 0

    def find(self, key: object) -> Path | None:
        """The image file for a payload ``path`` (absolute, or relative to one of the roots), else None."""
        if not isinstance(key, str) or not key:
            self.missed += 1
            return None
        p = Path(key)
        hit = None
        if p.is_absolute():
            if _inside(p, self.given) and p.is_file():
                hit = p
        else:
            order = ([self._hit_root] if self._hit_root is not None else []) + self.roots
            for root in order:
                if _inside(root / p, [root]) and (root / p).is_file():
                    hit, self._hit_root = root / p, root
                    break
        if hit is None:
            self.missed += 1
        else:
            self.found += 1
        return hit


def _inside(path: Path, roots: list[Path]) -> bool:
    """Whether ``path``, with ``..`` resolved by name, lies under one of ``roots`` (links inside a root are
    the root owner's own, and followed)."""
    normal = Path(os.path.normpath(path))
    return any(normal == root or normal.is_relative_to(root) for root in roots)


def thumbnail(path: str | Path | None, size: int = THUMB) -> Image | None:
    """A copy of the image that fits ``size``×``size`` (tiny images are enlarged with hard pixel edges
    so an 8×8 digit stays legible); None when there is no file or Pillow cannot read it."""
    if path is None:
        return None
    from PIL import Image, ImageOps, UnidentifiedImageError

    from hierqdrant.vision.images import too_many_pixels

    try:
        with Image.open(path) as im:
            if too_many_pixels(*im.size) is not None:  # never decode a 100-megapixel file for a thumbnail
                return None
            im.load()
            img = ImageOps.exif_transpose(im) or im
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGBA").convert("RGB") if "A" not in img.mode else _flatten(img)
    scale = size / max(img.size)
    new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    # Enlarging uses NEAREST (crisp pixels); shrinking a photo uses a proper filter.
    return img.resize(new, Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS)


def _flatten(img: Image) -> Image:
    """An image with transparency on a white background."""
    from PIL import Image

    rgba = img.convert("RGBA")
    out = Image.new("RGB", rgba.size, (255, 255, 255))
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def data_uri(img: Image) -> str:
    """``data:image/...;base64,...``: PNG for greyscale or few-colour images (small and exact), JPEG for photos."""
    buf = io.BytesIO()
    colours = img.getcolors(maxcolors=256)
    if img.mode == "L" or colours is not None:
        img.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    else:
        img.convert("RGB").save(buf, format="JPEG", quality=82, optimize=True)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"
