"""Temperature scaling (Guo et al. 2017): one scalar T fitted on validation logits, logits / T.

A model directory holds calibration.json = {"temperature": T, "ece_before", "ece_after", "nll_before",
"nll_after", "n"}; the scorer divides logits by T (load_temperature gives 1.0 for models without
one). T never changes the argmax, so accuracy and macro-F1 are untouched; only confidence moves.

With several windows per article, probabilities are averaged over the windows weighted by their
token counts (the scorer's chunk mode), and T is fitted on that averaged probability, so the
calibrated quantity is exactly the one the scorer publishes.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import UserError
from ..metrics import expected_calibration_error, log_loss
from .files import CALIBRATION_FILE, read_model_json

# log T is searched in [log 0.05, log 20]: beyond that the model is broken, not miscalibrated.
_LOG_T_RANGE = (math.log(0.05), math.log(20.0))


@dataclass
class Calibration:
    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    n: int

    def save(self, model_dir: str) -> None:
        with open(os.path.join(model_dir, CALIBRATION_FILE), "w") as fh:
            json.dump(asdict(self), fh, indent=2, sort_keys=True)
            fh.write("\n")


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / T, (N, C) → (N, C), in float64."""
    from scipy.special import softmax as scipy_softmax

    return scipy_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def window_mean(probs: np.ndarray, groups: np.ndarray, weights: np.ndarray | None = None,
                n_articles: int | None = None) -> np.ndarray:
    """Per-article probabilities (N, C) in float64 from per-window ones (M, C): the mean over each
    article's windows (`groups[m]` = article of window m) weighted by `weights` (content tokens; 1 each
    without). Each window's weighted row is formed in the probabilities' own precision, so float32
    probabilities and token counts give the scorer's numbers, float64 the trainer's."""
    groups = np.asarray(groups, dtype=np.int64)
    w = np.ones(len(groups)) if weights is None else np.asarray(weights, dtype=np.float64)
    n = int(groups.max()) + 1 if n_articles is None else n_articles
    out = np.zeros((n, probs.shape[1]))
    np.add.at(out, groups, probs * w[:, None].astype(probs.dtype, copy=False))
    total = np.bincount(groups, weights=w, minlength=n)
    return out / np.maximum(total, 1e-12)[:, None]


def article_probs(logits: np.ndarray, temperature: float = 1.0, groups: np.ndarray | None = None,
                  weights: np.ndarray | None = None, n_articles: int | None = None) -> np.ndarray:
    """Per-article probabilities (N, C) from per-window logits (M, C): softmax(logits / T), then the
    token-weighted mean over each article's windows (window_mean). Without groups every row is its own
    article."""
    probs = softmax(logits, temperature)
    if groups is None:
        return probs
    return window_mean(probs, groups, weights, n_articles)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None,
                    weights: np.ndarray | None = None, iterations: int = 60) -> Calibration:
    """The T that minimises validation NLL (SciPy's bounded Brent search on log T over _LOG_T_RANGE,
    at most `iterations` steps; NLL is unimodal in T for one window per article and in practice for
    averaged windows), with ECE and NLL before/after."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, dtype=np.int64)

    def nll(log_t: float) -> float:
        return log_loss(article_probs(logits, math.exp(log_t), groups, weights, len(labels)), labels)

    best = minimize_scalar(nll, bounds=_LOG_T_RANGE, method="bounded",
                           options={"xatol": 1e-6, "maxiter": iterations})
    temperature = math.exp(float(best.x))
    before = article_probs(logits, 1.0, groups, weights, len(labels))
    after = article_probs(logits, temperature, groups, weights, len(labels))
    nll_before, nll_after = log_loss(before, labels), log_loss(after, labels)
    if nll_after > nll_before:  # never worse than no scaling (flat NLL, tiny validation sets)
        temperature, after, nll_after = 1.0, before, nll_before
    return Calibration(temperature=float(temperature), ece_before=expected_calibration_error(before, labels),
                       ece_after=expected_calibration_error(after, labels), nll_before=nll_before,
                       nll_after=nll_after, n=int(len(labels)))


def load_temperature(model_dir: str) -> float:
    """The temperature saved with a model; 1.0 (no scaling) when the model has none."""
    path = os.path.join(model_dir, CALIBRATION_FILE)
    if not os.path.isfile(path):
        return 1.0
    value = read_model_json(path, ["temperature"])["temperature"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise UserError(f"{path}: temperature must be > 0 and finite, got {value!r}; retrain or delete the file")
    return float(value)
