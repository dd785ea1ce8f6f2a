"""Nothing lost, second pass, item 19: a 100-megapixel PNG was decoded whole (~1 GB in a worker) because the
decompression-bomb warning was silenced. Images above ``HIERQDRANT_MAX_PIXELS`` (default 50 M) are skipped
with a reason read from the header, before a pixel is decoded — on the worker path and on the device path."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hierqdrant.vision.device_decode import EncodedDataset
from hierqdrant.vision.images import ImageDecodeError, header_pixels_reason, load_rgb, too_many_pixels
from hierqdrant.vision.preprocessing import ImageTransform


def test_a_100_megapixel_png_is_refused_from_its_header(tmp_path: Path) -> None:
    huge = tmp_path / "huge.png"
    Image.new("1", (10_000, 10_000)).save(huge)  # 12.5 MB in memory as 1-bit, a few KB on disk
    with pytest.raises(ImageDecodeError) as caught:  # it used to come back as a 300 MB RGB image
        load_rgb(huge)
    assert caught.value.reason.startswith("too many pixels (10000×10000 = 100 MP; at most 50 MP")


def test_the_cap_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    png = tmp_path / "a.png"
    Image.new("RGB", (50, 40)).save(png)
    assert load_rgb(png).size == (50, 40)
    monkeypatch.setenv("HIERQDRANT_MAX_PIXELS", "1999")
    with pytest.raises(ImageDecodeError, match=r"^too many pixels \(50×40"):
        load_rgb(png)
    monkeypatch.setenv("HIERQDRANT_MAX_PIXELS", "2000")
    assert load_rgb(png).size == (50, 40) and too_many_pixels(50, 40) is None


def test_a_huge_jpeg_is_skipped_before_the_device_decodes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jpeg = tmp_path / "a.jpg"
    Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save(jpeg)
    data = EncodedDataset([str(jpeg)], ImageTransform(8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    assert data[0][1] == "jpeg"
    monkeypatch.setenv("HIERQDRANT_MAX_PIXELS", "1000")
    index, kind, tensor, reason = data[0]
    assert (index, kind, tensor) == (0, None, None) and reason is not None and reason.startswith("too many pixels")
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="JPEG")
    assert header_pixels_reason(buf.getvalue()) is None
    assert header_pixels_reason(b"not an image") is None  # the decoder reports those
