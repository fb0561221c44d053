"""The ensemble as scored: p ∝ p_transformer^w1 · p_linear^w2 with the weights saved beside its members
(fitting the weights is training/ensemble.py)."""

from __future__ import annotations

import numpy as np

from .calibration import softmax
from .files import ENSEMBLE_MEMBERS


def _log(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0))


def combined_logits(member_probs: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """(N, C) logits of the ensemble: the weighted sum of the members' log-probabilities."""
    return sum(weights[m] * _log(member_probs[m]) for m in ENSEMBLE_MEMBERS)


def combine(member_probs: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """(N, C) ensemble probabilities from each member's (N, C) probabilities."""
    return softmax(combined_logits(member_probs, weights))
