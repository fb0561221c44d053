"""metrics.py against known values: the Student-t table and Spearman with ties by hand."""

from __future__ import annotations

import math

import pytest

from allsides_batch.metrics import spearman, t_critical


@pytest.mark.parametrize("df, level, table", [
    (1, 0.95, 12.706), (2, 0.95, 4.303), (5, 0.95, 2.571), (10, 0.95, 2.228), (30, 0.95, 2.042),
    (1000, 0.95, 1.962), (10, 0.90, 1.812), (10, 0.99, 3.169), (1, 0.99, 63.657),
])
def test_t_critical_matches_printed_tables(df, level, table):
    assert t_critical(df, level) == pytest.approx(table, abs=1e-3)
    assert isinstance(t_critical(df, level), float)


def test_t_critical_tends_to_normal_and_refuses_no_degrees_of_freedom():
    assert t_critical(10**7) == pytest.approx(1.959964, abs=1e-5)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_critical(0)


def test_spearman_with_ties_by_hand():
    # x ranks (ties share the mean rank): 1, 2.5, 2.5, 4;  y ranks: 1, 4, 2.5, 2.5
    # deviations from the mean rank 2.5: (-1.5, 0, 0, 1.5) and (-1.5, 1.5, 0, 0)
    # rho = sum(dx·dy) / sqrt(sum dx² · sum dy²) = 2.25 / 4.5 = 0.5
    # (the no-ties shortcut 1 - 6·sum(d²) / (n(n²-1)) would give 0.55)
    rho = spearman([1, 2, 2, 3], [1, 3, 2, 2])
    assert rho == pytest.approx(0.5, abs=1e-12) and isinstance(rho, float)
    # order-preserving transforms do not change rho
    assert spearman([10, 20, 20, 300], [-5, 7, 0, 0]) == pytest.approx(0.5, abs=1e-12)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


@pytest.mark.parametrize("x, y", [([], []), ([1.0], [2.0]), ([1, 1, 1], [1, 2, 3]), ([1, 2, 3], [0, 0, 0])])
def test_spearman_undefined_is_nan(x, y):
    assert math.isnan(spearman(x, y))
