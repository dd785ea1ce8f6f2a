"""Issue "Nothing lost, second pass", 6, on the command line: ``--alpha`` above ``ALPHA_MAX`` (DESIGN.md
§3.13) is refused in one line naming the bound and the fix, before a store is opened or a file is read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hierqdrant.core.features import FeatureSet
from hierqdrant.core.model import ALPHA_MAX
from tests.cli.test_cli_messages import one_error_line, run
from tests.conftest import gaussian_classes


@pytest.fixture(scope="module")
def npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x, y = gaussian_classes(np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]), per_class=10, dims=4, seed=0)
    path = tmp_path_factory.mktemp("alpha") / "f.npz"
    FeatureSet(x, y, classes=["a", "b", "c"]).save(path)
    return path


def refused(line: str, alpha: str) -> None:
    assert line.startswith(f"alpha={float(alpha):g} is above {ALPHA_MAX:g}, ")
    assert line.endswith(f"pass --alpha ≤ {ALPHA_MAX:g}; α ≥ 2 × the tree's height already ranks by tree level first")


@pytest.mark.parametrize("alpha", ["100.001", "1e12", "1e308"])
def test_every_alpha_option_refuses_a_value_above_the_bound(npz: Path, tmp_path: Path, alpha: str) -> None:
    store = tmp_path / "store"
    refused(one_error_line(run("query", npz, "--alpha", alpha, "--data-dir", store)), alpha)
    refused(one_error_line(run("ingest", npz, "-c", "f", "--alpha", alpha, "--data-dir", store)), alpha)
    refused(one_error_line(run("hierarchy", "build", "-f", npz, "-o", tmp_path / "m", "--alpha", alpha)), alpha)
    assert not store.exists() and not (tmp_path / "m").exists()


def test_the_bound_itself_is_accepted(npz: Path, tmp_path: Path) -> None:
    ok = run("ingest", npz, "-c", "f", "--alpha", f"{ALPHA_MAX:g}", "--data-dir", tmp_path / "store", "--quiet")
    assert ok.exit_code == 0, ok.output
