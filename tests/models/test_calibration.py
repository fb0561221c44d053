"""Temperature scaling: fitted T lowers NLL and recovers a known temperature, window averaging, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from allsides_batch.errors import UserError
from allsides_batch.metrics import expected_calibration_error, log_loss
from allsides_batch.models.calibration import (
    CALIBRATION_FILE,
    article_probs,
    fit_temperature,
    load_temperature,
    softmax,
)


@pytest.fixture
def overconfident():
    """Labels drawn from softmax(z), logits reported as 3·z: a model three times too sure of itself."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 3)) * 1.5
    p = softmax(z)
    labels = np.array([rng.choice(3, p=row) for row in p])
    return 3.0 * z, labels


def test_temperature_lowers_nll_and_ece(overconfident):
    logits, labels = overconfident
    cal = fit_temperature(logits, labels)
    assert 2.5 < cal.temperature < 3.5  # recovers the true factor
    assert cal.nll_after < cal.nll_before - 0.1
    assert cal.ece_after < cal.ece_before and cal.ece_after < 0.03
    assert cal.nll_after == pytest.approx(log_loss(softmax(logits, cal.temperature), labels))
    # argmax, hence accuracy, is unchanged
    assert np.array_equal(softmax(logits, cal.temperature).argmax(1), logits.argmax(1))


def test_underconfident_gets_t_below_one(overconfident):
    logits, labels = overconfident
    assert fit_temperature(logits / 9.0, labels).temperature < 0.5


def test_fitted_temperature_is_the_analytic_optimum():
    """Every row has logits (s, 0, 0); a fraction q is labelled 0, the rest split evenly over 1 and 2.
    NLL is minimal where softmax gives class 0 exactly q: e^(s/T) / (e^(s/T) + 2) = q, so
    T* = s / log(2q / (1 - q)) = 4 / log 8 for s = 4, q = 0.8."""
    logits = np.tile([4.0, 0.0, 0.0], (100, 1))
    labels = np.array([0] * 80 + [1] * 10 + [2] * 10)
    cal = fit_temperature(logits, labels)
    assert cal.temperature == pytest.approx(4.0 / np.log(8.0), rel=1e-4)
    assert softmax(logits, cal.temperature)[0, 0] == pytest.approx(0.8, rel=1e-4)
    # a minimum: temperatures 10% either side do worse, and so does T = 1 (no scaling)
    for t in (0.9 * cal.temperature, 1.1 * cal.temperature, 1.0):
        assert log_loss(softmax(logits, t), labels) > cal.nll_after
    assert cal.nll_after < cal.nll_before


def test_window_probabilities_are_token_weighted_means():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 1.0, 0.0]])
    owner = np.array([0, 0, 1])
    weight = np.array([3.0, 1.0, 5.0])
    probs = article_probs(logits, 1.0, owner, weight, 2)
    p = softmax(logits)
    assert np.allclose(probs[0], (3 * p[0] + p[1]) / 4) and np.allclose(probs[1], p[2])
    assert np.allclose(probs.sum(1), 1.0)


def test_fit_on_windows_matches_article_level(overconfident):
    logits, labels = overconfident
    # every article split into two identical windows: the same T as one window each
    doubled = np.repeat(logits, 2, axis=0)
    owner = np.repeat(np.arange(len(labels)), 2)
    t1 = fit_temperature(logits, labels).temperature
    t2 = fit_temperature(doubled, labels, owner, np.ones(len(owner))).temperature
    assert t2 == pytest.approx(t1, rel=1e-3)
    assert expected_calibration_error(article_probs(doubled, t2, owner), labels) < 0.03


def test_save_and_load(tmp_path, overconfident):
    assert load_temperature(str(tmp_path)) == 1.0  # models without calibration are not scaled
    cal = fit_temperature(*overconfident)
    cal.save(str(tmp_path))
    saved = json.loads((tmp_path / CALIBRATION_FILE).read_text())
    assert set(saved) >= {"temperature", "ece_before", "ece_after", "nll_before", "nll_after"}
    assert load_temperature(str(tmp_path)) == pytest.approx(cal.temperature)
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"temperature": 0}))
    with pytest.raises(UserError, match="temperature must be > 0"):
        load_temperature(str(tmp_path))


def test_temperature_fit_recovers_known_temperature():
    """Labels drawn from softmax(logits / 2.5): the NLL-optimal temperature is 2.5."""
    rng = np.random.default_rng(0)
    n, true_t = 20_000, 2.5
    logits = rng.normal(size=(n, 3)) * 4.0
    p = softmax(logits, true_t)
    labels = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    cal = fit_temperature(logits, labels)
    assert cal.temperature == pytest.approx(true_t, abs=0.1)
    assert cal.nll_after < cal.nll_before
