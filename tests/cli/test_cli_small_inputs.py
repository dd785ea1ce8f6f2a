"""Nothing lost, second pass, item 19: the smaller ones.

- ``--pca 1.5`` silently kept every dimension: refused in one line, as ``-1`` is (and ``0``, ``nan``).
- features × 1e200 or × 1e-300 were refused as "all images give the same vector": the message now says that
  their squares overflow or underflow.
- negative labels said "classes are 0…0": they say they are negative.
- a symlink to ``/dev/zero`` named like an image was "broken symlink": "not a regular file (a device)".
- an image above ``HIERQDRANT_MAX_PIXELS`` (default 50 M pixels) is skipped and reported, never decoded.
- an absolute ``path`` in a payload was read and inlined into an HTML report: only files under
  ``--image-root`` are (and no relative key climbs out of its root).
- ``query --device tpu`` was accepted: unknown devices are refused as by the other commands.

(Duplicate and empty class names: ``tests/cli/test_cli_names.py``.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli.test_cli_ingest import make_folder
from tests.conftest import gaussian_classes
from tests.helpers.cli import one_error_line, run

PIXELS = ["--model", "pixels", "--image-size", "8", "--device", "cpu", "--workers", "0", "--threshold", "0.2"]


@pytest.fixture
def xy() -> tuple[np.ndarray, np.ndarray]:
    return gaussian_classes(np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]), per_class=20, dims=6, seed=4)


@pytest.mark.parametrize("pca", ["1.5", "-1", "0", "nan", "2.0"])
def test_a_pca_that_is_neither_a_share_nor_a_count_is_refused(tmp_path: Path, xy: tuple, pca: str) -> None:
    np.savez(tmp_path / "f.npz", features=xy[0], labels=xy[1])
    for args in (
        ("ingest", tmp_path / "f.npz", "-c", "feats", "--data-dir", tmp_path / "store", "--pca", pca),
        ("hierarchy", "build", "-f", tmp_path / "f.npz", "-o", tmp_path / "model", "--pca", pca),
    ):
        line = one_error_line(*run(*args)[::2])
        assert f"--pca '{pca}' is neither a variance share in (0, 1] nor a whole number" in line, line
    assert not (tmp_path / "store" / "feats").exists()


def test_pca_one_and_counts_still_work(tmp_path: Path, xy: tuple) -> None:
    np.savez(tmp_path / "f.npz", features=xy[0], labels=xy[1])
    for pca, dims in (("1.0", 6), ("all", 6), ("3", 3)):
        code, out, err = run(
            "hierarchy", "build", "-f", tmp_path / "f.npz", "-o", tmp_path / pca, "--pca", pca, "--json"
        )
        assert code == 0, err
        assert json.loads(out)["pca_dims"] == dims


@pytest.mark.parametrize(("scale", "says"), [(1e200, "squares overflow"), (1e-300, "squares underflow to 0")])
def test_features_too_large_or_too_small_say_so(tmp_path: Path, xy: tuple, scale: float, says: str) -> None:
    np.savez(tmp_path / "f.npz", features=xy[0] * scale, labels=xy[1])
    line = one_error_line(*run("ingest", tmp_path / "f.npz", "-c", "feats", "--data-dir", tmp_path / "store")[::2])
    assert says in line and "same vector" not in line, line
    assert "rescale them" in line


def test_negative_labels_say_they_are_negative(tmp_path: Path, xy: tuple) -> None:
    np.savez(tmp_path / "f.npz", features=xy[0], labels=xy[1] - 1)
    line = one_error_line(*run("ingest", tmp_path / "f.npz", "-c", "feats", "--data-dir", tmp_path / "store")[::2])
    assert "negative labels at rows [0, 1, 2, 3, 4] (values [-1])" in line and "0…0" not in line, line
    np.savez(tmp_path / "g.npz", features=xy[0], labels=xy[1] - 1, classes=np.array(["a", "b", "c"]))
    line = one_error_line(*run("ingest", tmp_path / "g.npz", "-c", "feats", "--data-dir", tmp_path / "store")[::2])
    assert "classes are 0…2" in line, line


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_a_link_to_dev_zero_is_not_a_regular_file(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "imgs", classes=2, per_class=3, size=16)
    (src / "class0" / "zero.png").symlink_to("/dev/zero")
    (src / "class1" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    code, out, err = run("ingest", src, "-c", "pics", *PIXELS, "--data-dir", tmp_path / "store", "--json")
    assert code == 1, err
    reasons = {Path(s["path"]).name: s["reason"] for s in json.loads(out)["skipped"]}
    assert reasons == {"zero.png": "not a regular file (a device)", "gone.png": "broken symlink"}


def test_an_image_over_the_pixel_cap_is_skipped_and_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_folder(tmp_path / "imgs", classes=2, per_class=3, size=16)
    Image.new("RGB", (40, 30), (10, 200, 30)).save(src / "class0" / "big.png")
    monkeypatch.setenv("HIERQDRANT_MAX_PIXELS", "1000")  # 40×30 = 1200 > 1000; the 16×16 ones pass
    code, out, err = run("ingest", src, "-c", "pics", *PIXELS, "--data-dir", tmp_path / "store", "--json")
    assert code == 1, err
    summary = json.loads(out)
    assert [(Path(s["path"]).name, s["reason"]) for s in summary["skipped"]] == [
        ("big.png", "too many pixels (40×30 = 0 MP; at most 0.001 MP, set HIERQDRANT_MAX_PIXELS to allow more)")
    ]
    assert summary["ingested"] == 6


def test_an_html_report_inlines_no_file_outside_the_image_roots(tmp_path: Path, xy: tuple) -> None:
    """The payloads' paths (a features file's ``paths``) name an image outside the roots, by an absolute path
    and by climbing out of the root; the report of a query over them inlines neither."""
    secret = tmp_path / "secret" / "me.png"
    secret.parent.mkdir()
    Image.new("RGB", (20, 20), (250, 0, 250)).save(secret)
    root = tmp_path / "root"
    (root / "imgs").mkdir(parents=True)
    Image.new("RGB", (20, 20), (0, 250, 0)).save(root / "imgs" / "ok.png")
    x, y = xy
    files = ["imgs/ok.png", str(secret), "../secret/me.png"]  # then keys that are no files, for unique ids
    paths = [files[i] if i < 3 else f"{files[i % 3]}#{i}" for i in range(len(x))]
    np.savez(tmp_path / "f.npz", features=x, labels=y, paths=np.asarray(paths))
    store = tmp_path / "store"
    assert run("ingest", tmp_path / "f.npz", "-c", "feats", "--data-dir", store)[0] == 0
    np.savez(tmp_path / "q.npz", features=x[:3], labels=y[:3], paths=np.asarray(["q0", "q1", "q2"]))
    html = tmp_path / "report.html"
    code, _, err = run("query", tmp_path / "q.npz", "-c", "feats", "--data-dir", store, "-k", str(len(x)),
                       "--html", html, "--image-root", root)  # fmt: skip
    assert code == 0, err
    from hierqdrant.reports.thumbnails import data_uri, thumbnail

    page = html.read_text()
    inside, outside = thumbnail(root / "imgs" / "ok.png"), thumbnail(secret)
    assert inside is not None and outside is not None
    assert data_uri(inside) in page  # the file under --image-root is shown
    assert data_uri(outside) not in page  # the one outside is not, by either path


def test_the_finder_keeps_to_its_roots(tmp_path: Path) -> None:
    from hierqdrant.reports.thumbnails import ImageFinder

    outside = tmp_path / "outside.png"
    Image.new("RGB", (4, 4)).save(outside)
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(root / "a" / "in.png")
    given = ImageFinder([root])
    assert given.find("a/in.png") == (root / "a" / "in.png").resolve()
    assert given.find(str((root / "a" / "in.png").resolve())) is not None  # absolute, under --image-root
    assert given.find(str(outside)) is None and given.find("../outside.png") is None
    assert given.find("a/../../outside.png") is None
    near = ImageFinder(near=[root / "a" / "q.png"])  # no --image-root: the folders above the query
    assert near.find(str(outside)) is None  # an absolute path needs a root that was given
    assert near.find("in.png") is not None


def test_query_refuses_an_unknown_device(tmp_path: Path, xy: tuple) -> None:
    np.savez(tmp_path / "f.npz", features=xy[0], labels=xy[1])
    store = tmp_path / "store"
    assert run("ingest", tmp_path / "f.npz", "-c", "feats", "--data-dir", store)[0] == 0
    code, out, err = run("query", tmp_path / "f.npz", "--data-dir", store, "--device", "tpu")
    assert code == 2 and "'tpu' is not one of" in out + err, out + err
    assert run("query", tmp_path / "f.npz", "--data-dir", store, "--device", "cpu")[0] == 0


def test_the_pixel_cap_reads_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from hierqdrant.vision.images import MAX_PIXELS, max_pixels

    assert MAX_PIXELS == 50_000_000
    for value, cap in (("", MAX_PIXELS), ("200_000_000", 200_000_000), ("0", MAX_PIXELS), ("lots", MAX_PIXELS)):
        monkeypatch.setenv("HIERQDRANT_MAX_PIXELS", value)
        assert max_pixels() == cap, value
    monkeypatch.delenv("HIERQDRANT_MAX_PIXELS")
    assert os.environ.get("HIERQDRANT_MAX_PIXELS") is None and max_pixels() == MAX_PIXELS
