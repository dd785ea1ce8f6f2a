"""A report rendered in a real browser: headless Chromium draws it and shows every image.

Skipped, with the reason, where no Chromium binary is found (``chromium``, ``chromium-browser``,
``google-chrome`` on PATH, or ``$HIERQDRANT_CHROMIUM``). CI (``.ci/run``, as root with apt-get) installs
Debian's ``chromium`` package before the tests and sets ``HIERQDRANT_REQUIRE_BROWSER``, so there it runs
(a missing browser then fails instead of skipping); it prints one line to the log (``browser check: …``)
that says which browser drew how many images.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hierqdrant.reports.query_report import write_query_report
from tests.reports.helpers import EVIL, make_cases

pytestmark = pytest.mark.slow  # starts headless Chromium

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str | None:
    """The browser binary, or None."""
    given = os.environ.get("HIERQDRANT_CHROMIUM")
    if given:
        return given if shutil.which(given) else None
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def run_browser(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start; the page is our own file.
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={profile}", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def browser() -> str:
    found = chromium()
    if found is None:
        reason = "no Chromium binary found (apt-get install chromium, or set HIERQDRANT_CHROMIUM)"
        if os.environ.get("HIERQDRANT_REQUIRE_BROWSER"):  # CI installed one: a skip would hide a broken check
            pytest.fail(reason + ", but HIERQDRANT_REQUIRE_BROWSER is set")
        pytest.skip(reason)
    return found


def test_a_report_renders_with_every_image_and_no_injected_markup(
    browser: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = make_cases(tmp_path)
    report = tmp_path / "report.html"
    write_query_report(report, cases, f"report {EVIL}", facts=[EVIL])
    expected = sum(1 + sum(len(hits) for hits in c.rows.values()) for c in cases)

    dom = run_browser(browser, tmp_path / "profile1", "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert len(re.findall(r"<img\b", dom.stdout)) == expected
    assert "<script>" not in dom.stdout  # the hostile label stayed text
    assert len(re.findall(r"<script\b", dom.stdout)) == 0

    shot = tmp_path / "shot.png"
    out = run_browser(
        browser, tmp_path / "profile2", f"--screenshot={shot}", "--window-size=1200,1000", report.as_uri()
    )
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    with Image.open(shot) as im:
        px = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert px.std() > 20, "the screenshot is blank"
    # The thumbnails' dark background (grey 20) covers a good share of the page only if they were drawn.
    dark = float(np.mean(np.all(np.abs(px - 20) < 6, axis=2)))
    assert dark > 0.02, f"only {dark:.1%} of the page has the thumbnails' dark pixels: images did not render"
    # The green frames of matching hits are there too.
    green = float(np.mean(np.all(np.abs(px - [46, 157, 99]) < 30, axis=2)))
    assert green > 0.001
    with capsys.disabled():
        print(f"\nbrowser check: {browser} rendered {expected} images; screenshot {px.shape[1]}×{px.shape[0]}, "
              f"{dark:.0%} thumbnail pixels")  # fmt: skip
