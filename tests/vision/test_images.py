"""Robust decoding: every bad file becomes an ImageDecodeError with a reason, every mode becomes RGB."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile

from hierqdrant.vision import images
from hierqdrant.vision.images import IMAGE_EXTENSIONS, MIN_SIDE, ImageDecodeError, is_image_file, load_rgb
from tests.unprivileged import run_unprivileged, shared_tmp


def _save(img: Image.Image, path: Path, **kw: Any) -> Path:
    img.save(path, **kw)
    return path


def _rgb(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img)


def test_extensions_cover_the_brief() -> None:
    assert {e.lstrip(".") for e in IMAGE_EXTENSIONS} == {
        "jpg",
        "jpeg",
        "png",
        "bmp",
        "gif",
        "webp",
        "tif",
        "tiff",
    }
    assert is_image_file("a/B.JPG") and is_image_file("x.TiFf") and not is_image_file("notes.txt")


def test_rgb_jpeg_roundtrip(tmp_path: Path) -> None:
    p = _save(Image.new("RGB", (10, 6), (200, 30, 40)), tmp_path / "a.jpg", quality=95)
    arr = _rgb(load_rgb(p))
    assert arr.shape == (6, 10, 3)
    assert np.abs(arr.astype(int) - [200, 30, 40]).max() <= 3


def test_grayscale_l_and_1bit(tmp_path: Path) -> None:
    p = _save(Image.new("L", (4, 4), 77), tmp_path / "g.png")
    assert (_rgb(load_rgb(p)) == 77).all()
    b = Image.new("1", (4, 4), 1)
    assert (_rgb(load_rgb(_save(b, tmp_path / "b.png"))) == 255).all()


def test_la_composited_on_white(tmp_path: Path) -> None:
    la = Image.new("LA", (3, 3), (0, 0))  # black, fully transparent → white
    assert (_rgb(load_rgb(_save(la, tmp_path / "la.png"))) == 255).all()


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert (_rgb(load_rgb(_save(p, tmp_path / "p.png"))) == [10, 200, 30]).all()
    p.info["transparency"] = 1
    out = _rgb(load_rgb(_save(p, tmp_path / "pt.png", transparency=1)))
    assert (out == 255).all()  # the transparent index shows the white background
    gif = _save(Image.new("P", (5, 5), 0), tmp_path / "g.gif")
    assert load_rgb(gif).size == (5, 5)


def test_cmyk_jpeg_converted(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    p = _save(cmyk, tmp_path / "c.jpg", quality=95)
    assert Image.open(p).mode == "CMYK"
    arr = _rgb(load_rgb(p)).astype(int)
    assert arr[..., 0].min() >= 240 and arr[..., 1].max() <= 15 and arr[..., 2].max() <= 15


def test_16bit_png_scaled_to_8bit(tmp_path: Path) -> None:
    a = np.array([[0, 257 * 100], [65535, 257 * 3]], dtype=np.uint16)
    p = _save(Image.fromarray(a), tmp_path / "d.png")
    assert Image.open(p).mode.startswith("I")
    out = _rgb(load_rgb(p))
    # v8 = round(v16 / 257): 0, 100, 255, 3 — not clipped at 255 as a naive convert("L") would be.
    assert out[..., 0].tolist() == [[0, 100], [255, 3]]
    assert (out[..., 0] == out[..., 2]).all()


def test_32bit_int_tiff(tmp_path: Path) -> None:
    a = np.array([[0, 257 * 20], [65535, 0]], dtype=np.int32)
    p = _save(Image.fromarray(a), tmp_path / "i.tif")
    assert Image.open(p).mode == "I"
    assert _rgb(load_rgb(p))[..., 1].tolist() == [[0, 20], [255, 0]]
    neg = np.array([[-100, 0], [100, 100]], dtype=np.int32)  # outside 0..65535 → min-max scaled
    out = _rgb(load_rgb(_save(Image.fromarray(neg), tmp_path / "n.tif")))[..., 0]
    assert out.tolist() == [[0, 128], [255, 255]]


def test_float_tiff(tmp_path: Path) -> None:
    unit = np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)
    p = _save(Image.fromarray(unit, mode="F"), tmp_path / "f.tif")
    assert _rgb(load_rgb(p))[..., 0].tolist() == [[0, 128], [255, 64]]
    wide = np.array([[-2.0, 0.0], [2.0, np.nan]], dtype=np.float32)
    out = _rgb(load_rgb(_save(Image.fromarray(wide, mode="F"), tmp_path / "w.tif")))[..., 0]
    assert out.tolist() == [[0, 128], [255, 128]]  # NaN → 0 before min-max, i.e. mid-grey here


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (3, 2))
    rgba.putdata([(255, 0, 0, 255), (0, 0, 0, 0), (0, 0, 0, 128)] * 2)
    out = _rgb(load_rgb(_save(rgba, tmp_path / "t.png")))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 1].tolist() == [255, 255, 255]
    assert np.abs(out[0, 2].astype(int) - 127).max() <= 1  # half black over white


def test_truncated_jpeg_is_rejected(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    good = _save(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), tmp_path / "g.jpg")
    data = good.read_bytes()
    bad = tmp_path / "trunc.jpg"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError) as err:
        load_rgb(bad)
    assert "truncated" in err.value.reason
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_corrupt_body_is_rejected(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[60:80] = b"\x00" * 20  # clobber the compressed pixel data (CRC fails)
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(bytes(data))
    with pytest.raises(ImageDecodeError) as err:
        load_rgb(bad)
    assert "corrupt" in err.value.reason


def test_text_file_named_jpg(tmp_path: Path) -> None:
    p = tmp_path / "page.jpg"
    p.write_text("<html>404 not found</html>")
    with pytest.raises(ImageDecodeError) as err:
        load_rgb(p)
    assert err.value.reason.startswith("not an image")


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(ImageDecodeError):
        load_rgb(p)


@pytest.mark.parametrize("size", [(1, 1), (1, 50), (50, 1)])
def test_too_small(tmp_path: Path, size: tuple[int, int]) -> None:
    p = _save(Image.new("RGB", size, (9, 9, 9)), tmp_path / "tiny.png")
    with pytest.raises(ImageDecodeError) as err:
        load_rgb(p)
    assert "too small" in err.value.reason
    assert MIN_SIDE == 2
    assert load_rgb(_save(Image.new("RGB", (2, 2)), tmp_path / "ok.png")).size == (2, 2)


def test_symlink_loop(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    os.symlink(b, a)
    os.symlink(a, b)
    with pytest.raises(ImageDecodeError) as err:
        load_rgb(a)
    assert err.value.reason == "symlink loop"


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError) as err:
        load_rgb(tmp_path / "nope.jpg")
    assert "not found" in err.value.reason
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(ImageDecodeError):
        load_rgb(tmp_path / "dir.jpg")


def test_unreadable_file_chmod() -> None:
    # as root too: the read runs as the user nobody there (tests/unprivileged.py)
    with shared_tmp() as folder:
        p = _save(Image.new("RGB", (4, 4)), folder / "locked.png")
        p.chmod(0)

        def read() -> str | None:
            try:
                load_rgb(p)
            except ImageDecodeError as e:
                return e.reason
            return None

        reason = run_unprivileged(read)
    assert reason is not None and "permission" in reason


def test_unreadable_file_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same path without depending on the user id: open() raises PermissionError."""
    p = _save(Image.new("RGB", (4, 4)), tmp_path / "locked.png")

    def deny(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr(images, "open", deny, raising=False)
    with pytest.raises(ImageDecodeError) as err:
        load_rgb(p)
    assert err.value.reason == "unreadable (permission denied)"


def test_returned_image_is_detached(tmp_path: Path) -> None:
    p = _save(Image.new("RGB", (4, 4), (5, 6, 7)), tmp_path / "x.png")
    img = load_rgb(p)
    p.unlink()  # pixels are in memory, the file handle is closed
    assert img.getpixel((0, 0)) == (5, 6, 7)
