"""Issue "Nothing lost, second pass", 6: the model, its fit settings and every α check refuse α above
``ALPHA_MAX`` (DESIGN.md §3.13) in one line naming the bound and the fix; the bound itself is accepted."""

from __future__ import annotations

import numpy as np
import pytest

from hierqdrant.core.errors import InputError
from hierqdrant.core.model import ALPHA_MAX, HierarchyModel, check_alpha
from hierqdrant.core.settings import FitSettings
from hierqdrant.evaluation.tune_grid import widen
from tests.conftest import gaussian_classes

ABOVE = (float(np.nextafter(ALPHA_MAX, np.inf)), 1e12, 1e308)


def one_line(error: pytest.ExceptionInfo[InputError]) -> str:
    message = str(error.value)
    assert "\n" not in message and f"above {ALPHA_MAX:g}" in message and f"--alpha ≤ {ALPHA_MAX:g}" in message
    return message


def test_the_bound_is_accepted_and_everything_above_it_refused() -> None:
    assert check_alpha(ALPHA_MAX) == ALPHA_MAX and check_alpha(0) == 0.0
    for alpha in ABOVE:
        with pytest.raises(InputError) as error:
            check_alpha(alpha)
        assert one_line(error).startswith(f"alpha={alpha:g} is above")


@pytest.mark.parametrize("alpha", ABOVE)
def test_the_model_and_its_settings_refuse_an_alpha_above_the_bound(alpha: float) -> None:
    x, y = gaussian_classes(np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]), per_class=10, dims=4, seed=0)
    with pytest.raises(InputError) as error:
        FitSettings(alpha=alpha)  # before an ingest embeds anything
    one_line(error)
    with pytest.raises(InputError) as error:
        HierarchyModel.fit(x, y, alpha=alpha)
    one_line(error)
    model = HierarchyModel.fit(x, y, alpha=ALPHA_MAX)
    assert model.alpha == ALPHA_MAX
    with pytest.raises(InputError) as error:
        model.with_alpha(alpha)
    one_line(error)
    with pytest.raises(InputError) as error:
        model.distance(x[0], x, alpha=alpha)
    one_line(error)


def test_tuning_widens_alpha_no_further_than_the_bound() -> None:
    _, _, alphas, grown = widen(["alpha-high"], (None, 0.3, 40.0), 4, [None], [0.3], [20.0, 40.0], 4)
    assert max(alphas) == ALPHA_MAX and grown == ["alpha-high"]
    _, _, alphas, grown = widen(["alpha-high"], (None, 0.3, ALPHA_MAX), 4, [None], [0.3], [50.0, ALPHA_MAX], 4)
    assert max(alphas) == ALPHA_MAX and grown == []
