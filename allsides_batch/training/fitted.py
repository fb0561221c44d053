"""What every kind of model's fit returns (Fitted) and the metrics written for it: article-level
report, outlet-level agreement, calibration on the validation split."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..config import OUTLET_MIN_ARTICLES, TrainConfig
from ..metrics import classification_report, outlet_agreement
from ..models.calibration import Calibration, article_probs, fit_temperature
from .data import LabelledData


@dataclass
class Fitted:
    """A trained model in memory with its metrics, as `fit` returns it."""

    # a transformers classifier, a LinearModel, or {"transformer": Fitted, "linear": Fitted}
    model: object
    tokenizer: object             # None for the linear kind
    metrics: dict
    calibration: Calibration | None
    max_length: int               # 0 for the linear kind (it reads the whole text)
    steps: int
    device: torch.device
    dtype: torch.dtype
    val_probs: np.ndarray | None = None   # (N_val, 3) article probabilities as the scorer would give them
    test_probs: np.ndarray | None = None  # (N_test, 3)
    kind: str = "transformer"
    ensemble_weights: dict | None = None  # ensemble: {"transformer": w, "linear": w}


def report_from_probs(labels: np.ndarray, sources: list[str], probs: np.ndarray, temperature: float = 1.0) -> dict:
    """Article-level metrics and outlet-level agreement (outlets with at least OUTLET_MIN_ARTICLES)."""
    report = classification_report(labels, probs)
    report["val_loss"] = report["log_loss"]
    report["outlets"] = outlet_agreement(sources, labels, probs, min_articles=OUTLET_MIN_ARTICLES)
    report["temperature"] = temperature
    return report


def epoch_row(report: dict, epoch: float, step: int, train_loss: float) -> dict:
    """One row of metrics.json's "epochs" (the model card's table) from that epoch's validation report.
    The transformer adds train_samples_per_s (and adversary_loss) to it."""
    return {"epoch": epoch, "step": step, "train_loss": float(train_loss), "val_loss": report["val_loss"],
            "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
            "per_class_f1": {k: v["f1"] for k, v in report["per_class"].items()}, "ece": report["ece"],
            "outlet_spearman": report["outlets"]["spearman"]}


def fit_metrics(cfg: TrainConfig, epochs: list[dict], best: tuple[float, float], seconds: float,
                validation: dict, calibration: Calibration | None, test: dict | None = None,
                test_uncalibrated: dict | None = None) -> dict:
    """metrics.json for every kind: the epoch rows, the one chosen by cfg.metric_for_best (`best`: its epoch
    and value), the validation report (at the fitted temperature), the temperature fit, and the test reports
    with and without it."""
    best_epoch, best_value = best
    return {"metric_for_best": cfg.metric_for_best, "best_epoch": best_epoch, "best_value": best_value,
            "epochs": epochs, "train_seconds": seconds, "validation": validation,
            "calibration": asdict(calibration) if calibration else None, "test": test,
            "test_uncalibrated": test_uncalibrated}


def metrics_from_article_logits(cfg: TrainConfig, val_data: LabelledData, val_logits: np.ndarray,
                                test_data: LabelledData | None, test_logits: np.ndarray | None,
                                train_loss: float, seconds: float) -> tuple[dict, Calibration | None, np.ndarray,
                                                                           np.ndarray | None]:
    """metrics.json for a model fitted in one pass (linear, ensemble): one "epoch" row, the temperature
    (with --calibrate) fitted on validation, validation and test reports. Logits are per article (N, C).
    Returns (metrics, calibration, validation probabilities, test probabilities)."""
    calibration = fit_temperature(val_logits, val_data.labels) if cfg.calibrate else None
    temperature = calibration.temperature if calibration else 1.0
    val_probs = article_probs(val_logits, temperature)
    report = report_from_probs(val_data.labels, val_data.sources, val_probs, temperature)
    test_probs, test, test_uncalibrated = None, None, None
    if test_data is not None:
        test_probs = article_probs(test_logits, temperature)
        test = report_from_probs(test_data.labels, test_data.sources, test_probs, temperature)
        test_uncalibrated = report_from_probs(test_data.labels, test_data.sources, article_probs(test_logits), 1.0)
    metrics = fit_metrics(cfg, [epoch_row(report, 1, 0, train_loss)], (1, report[cfg.metric_for_best]), seconds,
                          report, calibration, test, test_uncalibrated)
    return metrics, calibration, val_probs, test_probs


def _subsample(idx: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or len(idx) <= limit:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, size=limit, replace=False))


def limit_rows(data: LabelledData, limit: int | None, seed: int) -> LabelledData:
    """A seeded random subset of at most `limit` rows (all rows when limit is None)."""
    if limit is None or len(data) <= limit:
        return data
    return data.subset(_subsample(np.arange(len(data)), limit, seed))

