"""The transformer fit's learning-rate schedule (training/transformer.py): warmup, then linear decay or
constant."""

from __future__ import annotations

import pytest
import torch

from allsides_batch.config import TrainConfig
from allsides_batch.training.transformer import _lr_scheduler


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
