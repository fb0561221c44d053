"""Classification metrics in numpy (no scikit-learn at run time): accuracy, macro-F1, per-class
precision/recall/F1, confusion matrix, log loss, expected calibration error, outlet-level agreement;
and Student-t critical values for the per-outlet intervals (no SciPy at run time)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np

from . import LABELS


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int = len(LABELS)) -> np.ndarray:
    """(n, n) counts; rows = true label, columns = predicted."""
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def per_class(cm: np.ndarray) -> dict[str, dict[str, float]]:
    tp = np.diag(cm).astype(float)
    pred = cm.sum(axis=0).astype(float)
    true = cm.sum(axis=1).astype(float)
    precision = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    recall = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {lab: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                  "support": int(true[i])} for i, lab in enumerate(LABELS)}


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
    p = np.clip(np.asarray(probs, dtype=np.float64)[np.arange(len(y_true)), np.asarray(y_true)], 1e-12, 1.0)
    return float(-np.log(p).mean())


def _rank(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), as Spearman's rho needs."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    x, y = _rank(np.asarray(x, dtype=float)), _rank(np.asarray(y, dtype=float))
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


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
    cm = confusion(y_true, y_pred)
    classes = per_class(cm)
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        "macro_f1": float(np.mean([c["f1"] for c in classes.values()])),
        "per_class": classes,
        "confusion": cm.tolist(),
        "log_loss": log_loss(probs, y_true),
        "ece": expected_calibration_error(probs, y_true),
    }


def _t_cdf_two_sided(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer df, in closed form (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2 == 1:
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return (2 / math.pi) * (theta + (s * math.cos(theta) * total if df > 1 else 0.0))
    term, total = 1.0, 1.0
    for k in range(1, df // 2):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def t_critical(df: int, level: float = 0.95) -> float:
    """Two-sided critical value t with P(|T| < t) = level, for integer df >= 1 (bisection on the exact CDF)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df > 1000:
        # Cornish-Fisher expansion in 1/df (A&S 26.7.5): exact to ~1e-12 here; the series would be long
        z = statistics.NormalDist().inv_cdf((1 + level) / 2)
        g1 = (z ** 3 + z) / 4
        g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
        g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
        return z + g1 / df + g2 / df ** 2 + g3 / df ** 3
    lo, hi = 0.0, 1.0
    while _t_cdf_two_sided(hi, df) < level:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf_two_sided(mid, df) < level else (lo, mid)
    return (lo + hi) / 2
