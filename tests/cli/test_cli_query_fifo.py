"""Issue "Nothing lost, second pass", 7: ``hierqdrant query`` on a FIFO named ``*.png`` — as an argument or
inside a query folder — hung forever (opening a FIFO waits for a writer); ``embed`` and ``eval`` skip it.
Now query reports it with its reason and never opens it. The CLI runs in a subprocess with a timeout, so a
regression fails instead of hanging."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_cli_ingest import make_folder
from tests.cli.test_cli_messages import run

ROOT = Path(__file__).resolve().parents[2]
FIFO = "not a regular file (a FIFO)"
pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fifo")
    images = make_folder(root / "imgs", classes=2, per_class=4, size=16)
    ok = run("ingest", images, "-c", "pics", "--model", "pixels", "--image-size", "8", "--device", "cpu",
             "--workers", "0", "--data-dir", root / "store", "--quiet")  # fmt: skip
    assert ok.exit_code == 0, ok.output
    return root


def query(store: Path, *inputs: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "hierqdrant", "query", *map(str, inputs), "-k", "2", "--device", "cpu",
            "--data-dir", str(store / "store")]  # fmt: skip
    try:
        return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("hierqdrant query still running after 60 s: it opened a FIFO and waited for a writer")


def test_a_fifo_given_as_the_query_is_refused_in_one_line(store: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    done = query(store, fifo)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: cannot query with {fifo}: {FIFO} — pass image files, folders of images or a features file made "
        "by `hierqdrant embed`"
    ]


def test_a_fifo_beside_real_queries_is_reported_and_the_others_answered(store: Path, tmp_path: Path) -> None:
    folder = tmp_path / "queries"
    folder.mkdir()
    shutil.copy(store / "imgs" / "class0" / "000.png", folder / "a.png")
    os.mkfifo(folder / "b.png")
    loose = tmp_path / "loose.png"
    os.mkfifo(loose)
    done = query(store, folder, loose)
    assert done.returncode == 1, done.stderr  # partial: something was skipped
    assert f"skipped {folder / 'b.png'}: {FIFO}" in done.stderr and f"skipped {loose}: {FIFO}" in done.stderr
    assert "a.png" in done.stdout and "class0/000.png" in done.stdout
