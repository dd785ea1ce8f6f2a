"""Issue "Nothing lost, second pass", 7: a FIFO (or any file that is not a regular one) named ``*.png`` is
reported with a short reason and never waited on — ``open`` of a FIFO blocks until a writer comes, which
made ``hierqdrant query`` hang forever. Every call runs under a guard that fails the test instead of hanging."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from hierqdrant.vision.backbones import load_backbone
from hierqdrant.vision.device_decode import EncodedDataset
from hierqdrant.vision.extract import extract_features
from hierqdrant.vision.images import ImageDecodeError, load_rgb, open_image_file, regular_file_reason
from hierqdrant.vision.preprocessing import ImageTransform

FIFO = "not a regular file (a FIFO)"
pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")


def guarded(fifos: list[Path], call: Callable[[], Any], seconds: float = 60.0) -> Any:
    """``call()`` in a thread; if it is still running after ``seconds`` (blocked opening a FIFO), each FIFO
    gets a writer for a moment, which frees the blocked open, and the test fails."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test below
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for fifo in fifos:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        thread.join(10)
        pytest.fail(f"still blocked after {seconds} s: a FIFO was opened")
    if "error" in out:
        raise out["error"]
    return out.get("value")


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(good)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    jpeg_fifo = tmp_path / "pipe.jpg"
    os.mkfifo(jpeg_fifo)
    link = tmp_path / "link.png"
    link.symlink_to(fifo)
    return {"good": good, "fifo": fifo, "jpeg_fifo": jpeg_fifo, "link": link}


def test_a_fifo_is_refused_with_a_reason_and_never_opened(files: dict[str, Path]) -> None:
    fifos = [files["fifo"], files["jpeg_fifo"]]
    assert regular_file_reason(files["good"]) is None
    assert regular_file_reason(files["fifo"]) == FIFO and regular_file_reason(files["link"]) == FIFO
    assert regular_file_reason(files["good"].parent) == "not a file (a directory)"
    for name in ("fifo", "link"):
        with pytest.raises(ImageDecodeError, match=r"^not a regular file \(a FIFO\)$"):
            guarded(fifos, lambda name=name: load_rgb(files[name]))
        with pytest.raises(ImageDecodeError, match=r"^not a regular file \(a FIFO\)$"):
            guarded(fifos, lambda name=name: open_image_file(files[name]))
    assert guarded(fifos, lambda: load_rgb(files["good"])).size == (16, 16)


def test_extraction_skips_a_fifo_with_its_reason(files: dict[str, Path]) -> None:
    fifos = [files["fifo"], files["jpeg_fifo"]]
    paths = [files["good"], files["fifo"], files["link"], files["jpeg_fifo"]]
    backbone = load_backbone("pixels", image_size=4)
    got = guarded(fifos, lambda: extract_features(paths, backbone, device="cpu", num_workers=0, progress=False))
    assert got.indices.tolist() == [0]
    assert sorted((s.path, s.reason) for s in got.skipped) == sorted((str(p), FIFO) for p in paths[1:])
    # The device-decode path reads a JPEG's bytes itself: the same refusal, without blocking.
    data = EncodedDataset([str(p) for p in paths], ImageTransform(4, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    samples = guarded(fifos, lambda: [data[i] for i in range(len(paths))])
    assert samples[0][3] is None and [s[3] for s in samples[1:]] == [FIFO] * 3
