"""``eval --html``'s page and the hook it reads: the head of every ranking (EvalResult.tops)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hierqdrant.core.features import FeatureSet
from hierqdrant.evaluation.run import EvalPlan, EvalReport, run_eval
from hierqdrant.evaluation.scoring import TOP_KEPT
from hierqdrant.reports.eval_report import eval_page, pick_examples
from hierqdrant.reports.thumbnails import ImageFinder
from tests.conftest import gaussian_classes
from tests.reports.helpers import EVIL, write_pngs
from tests.reports.test_html import parse

CENTRES = np.array([[0.0, 0.0], [1.2, 0.0], [6.0, 6.0], [6.8, 6.0]])  # two pairs of neighbouring classes


@pytest.fixture(scope="module")
def npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 classes × 20 items (16 train, 4 test) whose paths are small PNGs beside the file; one class
    name is hostile markup."""
    root = tmp_path_factory.mktemp("evalreport")
    x, y = gaussian_classes(CENTRES, per_class=20, dims=6, spread=1.0, seed=3)
    write_pngs(root / "imgs", len(y))
    splits = np.where(np.arange(len(y)) % 20 < 16, "train", "test")
    FeatureSet(
        x, y, classes=["a", "b", EVIL, "d"], paths=[f"imgs/{i:02d}.png" for i in range(len(y))], splits=list(splits)
    ).save(root / "f.npz")
    return root / "f.npz"


def _held_out(npz: Path) -> EvalReport:
    return run_eval(
        EvalPlan(db=str(npz), db_split="train", queries=npz, query_split="test", methods=["cosine", "overlap"],
                 ks=(1, 5, 10), alpha=3.0, threshold=0.05)
    )  # fmt: skip


def _first_hit_accuracy(report: EvalReport, method: str) -> float:
    tops = report.result.tops
    assert tops is not None
    first = tops.top[method][:, 0]
    return float(np.mean(tops.db_labels[first] == tops.query_labels))


def test_tops_are_the_head_of_the_rankings_that_were_scored(npz: Path) -> None:
    report = _held_out(npz)
    tops = report.result.tops
    assert tops is not None and tops.tree is not None
    assert tops.top["cosine"].shape == (16, TOP_KEPT) and (tops.top["cosine"] >= 0).all()
    assert len(tops.query_ids) == 16 and len(tops.db_ids) == 64
    for m in ("cosine", "overlap"):  # the first hit's label agrees with the scored map@1
        assert _first_hit_accuracy(report, m) == pytest.approx(report.result.metrics[m]["map@1"])
    assert "tops" not in report.to_dict()  # not part of the JSON


def test_cross_fitted_tops_are_put_back_in_query_order(npz: Path) -> None:
    report = run_eval(EvalPlan(db=str(npz), db_split="train", methods=["cosine", "overlap"], ks=(1,), folds=3))
    assert report.protocol == "cross-fitting"
    tops = report.result.tops
    assert tops is not None
    assert "" not in tops.query_ids and sorted(tops.query_ids) == sorted(tops.db_ids)
    own = np.asarray([tops.db_ids.index(q) for q in tops.query_ids])
    assert not (tops.top["overlap"] == own[:, None]).any()  # a query never retrieves itself
    for m in ("cosine", "overlap"):
        assert _first_hit_accuracy(report, m) == pytest.approx(report.result.metrics[m]["map@1"])


def test_examples_are_where_the_rankings_differ(npz: Path) -> None:
    report = _held_out(npz)
    picked = pick_examples(report, 4)
    tops = report.result.tops
    assert tops is not None and picked
    for q, why in picked:
        assert set(tops.top["overlap"][q]) != set(tops.top["cosine"][q]) or "map@10" in why
    gains = report.result.per_query["overlap"]["map@10"] - report.result.per_query["cosine"]["map@10"]
    if (gains > 0).any():  # the best gain comes first
        assert picked[0][0] == int(np.argmax(gains))


def test_the_page_has_tables_plot_tree_and_examples_with_thumbnails(npz: Path) -> None:
    report = _held_out(npz)
    text, notes = eval_page(report, finder=ImageFinder([npz.parent]), examples=3)
    parsed = parse(text)
    assert notes == []
    assert [t for t, _ in parsed.tags if t == "script"] == []
    assert sum(t == "svg" for t, _ in parsed.tags) == 2  # map@k and the tree
    n_cases = len(pick_examples(report, 3))
    imgs = [a for t, a in parsed.tags if t == "img"]
    assert n_cases >= 1 and len(imgs) == n_cases * (1 + 2 * TOP_KEPT)
    assert all((a["src"] or "").startswith("data:image/") for a in imgs)
    assert EVIL in "".join(parsed.text)  # the hostile class name shows as text (tree, table of examples)
    assert "<script>alert" not in text


def test_without_image_files_the_page_says_so(npz: Path) -> None:
    report = _held_out(npz)
    text, notes = eval_page(report, finder=ImageFinder([npz.parent / "nowhere"]), examples=2)
    assert notes and "thumbnails need image paths" in notes[0]
    assert [t for t, _ in parse(text).tags if t == "img"] == []
