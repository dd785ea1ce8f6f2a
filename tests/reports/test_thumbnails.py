"""Finding a result's image and making its thumbnail (hierqdrant.reports.thumbnails)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hierqdrant.reports.thumbnails import THUMB, ImageFinder, data_uri, thumbnail
from tests.reports.helpers import write_pngs


def test_finder_resolves_keys_relative_to_the_ingested_folder_above_the_queries(tmp_path: Path) -> None:
    root = tmp_path / "digits"
    (train,) = write_pngs(root / "train" / "seven", 1)
    (query,) = write_pngs(root / "test" / "seven", 1)
    finder = ImageFinder(near=[query])  # not told the root: found from the query's parents
    assert finder.find("train/seven/00.png") == train.resolve()
    assert finder.find("train/seven/missing.png") is None
    assert finder.find("feats.npz#3") is None and finder.find(None) is None
    assert (finder.found, finder.missed) == (1, 3)


def test_finder_prefers_the_roots_given(tmp_path: Path) -> None:
    (a,) = write_pngs(tmp_path / "a" / "x", 1)
    write_pngs(tmp_path / "b" / "x", 1)
    assert ImageFinder([tmp_path / "a"], near=[tmp_path / "b" / "q.png"]).find("x/00.png") == a.resolve()


def test_tiny_images_are_enlarged_with_hard_edges(tmp_path: Path) -> None:
    (png,) = write_pngs(tmp_path, 1, size=8)
    img = thumbnail(png)
    assert img is not None and img.size == (THUMB, THUMB)
    values = set(np.asarray(img).ravel().tolist())
    assert values == {20, 230}  # NEAREST: no blended grey levels


def test_large_photos_shrink_and_inline_as_jpeg(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    photo = tmp_path / "p.jpg"
    Image.fromarray(rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)).save(photo)
    img = thumbnail(photo)
    assert img is not None and max(img.size) == THUMB and img.size[1] == THUMB
    uri = data_uri(img)
    assert uri.startswith("data:image/jpeg;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size == img.size


def test_greyscale_inlines_as_png(tmp_path: Path) -> None:
    (png,) = write_pngs(tmp_path, 1)
    img = thumbnail(png)
    assert img is not None and data_uri(img).startswith("data:image/png;base64,")


@pytest.mark.parametrize("content", [b"", b"not an image", b"\x89PNG\r\n\x1a\n broken"])
def test_unreadable_files_give_no_thumbnail(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    assert thumbnail(bad) is None
    assert thumbnail(tmp_path / "missing.png") is None
    assert thumbnail(None) is None
