"""Finding a result's image file and making a small thumbnail of it (Pillow), inlined as a data URI.

Points written by ``hierqdrant ingest`` from an image folder carry ``path``: the image's key relative
to the folder that was ingested. The folder itself is not stored, so :class:`ImageFinder` tries a few
roots in order: the ones given (``--image-root``), the folders above the query images (a query from
``digits/test/seven/`` finds ``digits/train/...``), and the working directory.
"""

from __future__ import annotations

import base64
import io
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
        if p.is_absolute():
            hit = p if p.is_file() else None
        else:
            order = ([self._hit_root] if self._hit_root is not None else []) + self.roots
            hit = None
            for root in order:
                if (root / p).is_file():
                    hit, self._hit_root = root / p, root
                    break
        if hit is None:
            self.missed += 1
        else:
            self.found += 1
        return hit


def thumbnail(path: str | Path | None, size: int = THUMB) -> Image | None:
    """A copy of the image that fits ``size``×``size`` (tiny images are enlarged with hard pixel edges
    so an 8×8 digit stays legible); None when there is no file or Pillow cannot read it."""
    if path is None:
        return None
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
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
