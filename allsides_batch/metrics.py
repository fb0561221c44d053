"""Classification metrics: accuracy, macro-F1, per-class precision/recall/F1, confusion matrix and
log loss (scikit-learn), expected calibration error, outlet-level agreement (Spearman, SciPy); and
Student-t critical values for the per-outlet intervals (SciPy).

scikit-learn and SciPy are imported inside the functions that use them: they take seconds to import,
and modules that need only part of this one (aggregate: t_critical) should not pay for the rest."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import LABELS

_CLASSES = list(range(len(LABELS)))


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int = len(LABELS)) -> np.ndarray:
    """(n, n) int64 counts; rows = true label, columns = predicted."""
    from sklearn.metrics import confusion_matrix

    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if len(y_true) == 0:  # scikit-learn refuses empty input
        return np.zeros((n, n), dtype=np.int64)
    return confusion_matrix(y_true, y_pred, labels=list(range(n))).astype(np.int64)


def _per_class(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 (0 where undefined) and support for each of LABELS."""
    from sklearn.metrics import precision_recall_fscore_support

    if len(y_true) == 0:
        zeros = np.zeros(len(LABELS))
        precision, recall, f1, support = zeros, zeros, zeros, zeros.astype(np.int64)
    else:
        precision, recall, f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=_CLASSES, average=None, zero_division=0)
    return {lab: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                  "support": int(support[i])} for i, lab in enumerate(LABELS)}


def per_class(cm: np.ndarray) -> dict[str, dict[str, float]]:
    """Per-class precision/recall/F1/support from a (3, 3) confusion matrix (rows true, columns predicted)."""
    cm = np.asarray(cm, dtype=np.int64)
    true_idx, pred_idx = np.indices(cm.shape)
    counts = cm.ravel()
    return _per_class(np.repeat(true_idx.ravel(), counts), np.repeat(pred_idx.ravel(), counts))


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins (Guo et al. 2017)."""
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(y_true)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def log_loss(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Mean negative log-probability of the true label (natural log); NaN for no rows.

    Probabilities are floored at 1e-12 (one confidently wrong row costs at most -log 1e-12 = 27.6)
    and each row is renormalised to sum to 1 (probabilities read back from float32 columns miss by
    ~1e-7, which scikit-learn would warn about)."""
    from sklearn.metrics import log_loss as sk_log_loss

    y_true = np.asarray(y_true, dtype=np.int64)
    if len(y_true) == 0:
        return float("nan")
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    probs = probs / probs.sum(axis=1, keepdims=True)
    return float(sk_log_loss(y_true, probs, labels=_CLASSES))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (ties share their mean rank); NaN for fewer than 2 points or a constant input."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")  # undefined; SciPy would also warn
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def outlet_agreement(sources: Sequence[str], y_true: np.ndarray, probs: np.ndarray, min_articles: int = 1) -> dict:
    """Per outlet: mean bias score (p_right − p_left) vs. the outlet's label (left 0, center 1, right 2).

    Returns Spearman rho over outlets with at least `min_articles` articles, and outlet-level
    accuracy (the outlet's majority predicted label vs. its majority true label)."""
    probs = np.asarray(probs, dtype=np.float64)
    score = probs[:, 2] - probs[:, 0]
    pred = probs.argmax(axis=1)
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(sources):
        groups.setdefault(s, []).append(i)
    means, labels, hits = [], [], []
    for rows in groups.values():
        if len(rows) < min_articles:
            continue
        idx = np.asarray(rows)
        true_lab = np.bincount(np.asarray(y_true)[idx], minlength=len(LABELS)).argmax()
        means.append(score[idx].mean())
        labels.append(true_lab)
        hits.append(np.bincount(pred[idx], minlength=len(LABELS)).argmax() == true_lab)
    return {"outlets": len(means), "spearman": spearman(means, labels) if means else float("nan"),
            "outlet_accuracy": float(np.mean(hits)) if hits else float("nan"), "min_articles": min_articles}


def classification_report(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """accuracy, macro_f1, per-class, confusion, log loss and ECE for class probabilities (N, 3)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    y_pred = probs.argmax(axis=1)
    classes = _per_class(y_true, y_pred)
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        # macro-F1 as scikit-learn defines it: the unweighted mean over all three labels, absent ones included
        "macro_f1": float(np.mean([c["f1"] for c in classes.values()])),
        "per_class": classes,
        "confusion": confusion(y_true, y_pred).tolist(),
        "log_loss": log_loss(probs, y_true),
        "ece": expected_calibration_error(probs, y_true),
    }


def t_critical(df: int, level: float = 0.95) -> float:
    """Two-sided critical value t with P(|T| < t) = level for Student's t with df >= 1."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    from scipy.stats import t

    return float(t.ppf((1 + level) / 2, df))
