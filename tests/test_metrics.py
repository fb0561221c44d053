"""The maths against known values: Student-t table, Spearman with ties by hand, temperature scaling
recovering a known temperature, and the warmup/linear-decay learning-rate schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from allsides_batch.config import TrainConfig
from allsides_batch.metrics import spearman, t_critical
from allsides_batch.models.calibration import fit_temperature, softmax
from allsides_batch.training.transformer import _lr_scheduler


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


def _lrs(cfg: TrainConfig, total_steps: int, base_lr: float = 1e-3) -> list[float]:
    """lr before optimizer steps 0..total_steps; the scheduler steps after the optimizer, as in training."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=base_lr)
    scheduler = _lr_scheduler(cfg, optimizer, total_steps)
    lrs = []
    for _ in range(total_steps + 1):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_linear_schedule_warms_up_from_zero_and_decays_to_zero():
    cfg = TrainConfig(data=["unused.parquet"], output="unused", warmup_steps=4, lr_scheduler="linear")
    lrs = _lrs(cfg, total_steps=10)
    assert lrs[0] == 0.0                                # Hugging Face convention: the first step has lr 0
    assert lrs[1:5] == pytest.approx([0.25e-3, 0.5e-3, 0.75e-3, 1e-3])  # linear warmup, base lr after 4 steps
    assert lrs[7] == pytest.approx(0.5e-3)              # halfway through the decay
    assert lrs[10] == 0.0                               # zero at the end


def test_constant_schedule_holds_base_lr_after_warmup():
    cfg = TrainConfig(data=["unused.parquet"], output="unused", warmup_steps=4, lr_scheduler="constant")
    lrs = _lrs(cfg, total_steps=10)
    assert lrs[0] == 0.0 and lrs[2] == pytest.approx(0.5e-3)
    assert lrs[4:] == pytest.approx([1e-3] * 7)


def test_no_warmup_starts_at_base_lr():
    cfg = TrainConfig(data=["unused.parquet"], output="unused", warmup_steps=0, lr_scheduler="linear")
    lrs = _lrs(cfg, total_steps=4)
    assert lrs == pytest.approx([1e-3, 0.75e-3, 0.5e-3, 0.25e-3, 0.0])
