"""The ensemble: a transformer and the full-text linear model, combined as a weighted geometric mean
of their probabilities,

    p ∝ exp(w_transformer · log p_transformer + w_linear · log p_linear),

with the two weights fitted by minimising log loss on the outlet-grouped validation split (the
outlets neither member trained on). The weights also set the sharpness of the combined
probabilities, so no separate temperature is needed. Saved as one directory: allsides_model.json
(kind ensemble, the weights) and one complete model per member in transformer/ and linear/.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from ..models.ensemble import _log, combine, combined_logits
from ..models.files import ENSEMBLE_MEMBERS

__all__ = ["combine", "combine_members", "combined_logits", "fit_ensemble", "fit_weights"]

log = logging.getLogger(__name__)

_MAX_WEIGHT = 20.0


def fit_weights(member_probs: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
    """Non-negative member weights minimising the log loss of `combine` on labelled (validation) rows."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    logs = np.stack([_log(member_probs[m]) for m in ENSEMBLE_MEMBERS])  # (K, N, C)
    labels = np.asarray(labels, dtype=np.int64)
    rows = np.arange(len(labels))

    def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        log_p = log_softmax(np.tensordot(w, logs, axes=1), axis=1)       # (N, C): log of combine's output
        p = np.exp(log_p)                                                 # (N, C)
        loss = float(np.mean(-log_p[rows, labels]))
        # d loss / d w_k = mean over rows of E_p[log p_k] - log p_k[label]
        grad = (np.einsum("knc,nc->kn", logs, p) - logs[:, rows, labels]).mean(axis=1)
        return loss, grad

    result = minimize(loss_and_grad, np.full(len(ENSEMBLE_MEMBERS), 0.5), jac=True, method="L-BFGS-B",
                      bounds=[(0.0, _MAX_WEIGHT)] * len(ENSEMBLE_MEMBERS))
    return {m: float(w) for m, w in zip(ENSEMBLE_MEMBERS, result.x)}


def fit_ensemble(cfg, train_data, val_data, test_data=None):
    """train.fit for kind ensemble: both members on the same training split (no temperature of their
    own), the weights on the validation split, reports on validation and test. Returns a train.Fitted."""
    from .fitted import Fitted, limit_rows
    from .linear import fit_linear_model
    from .transformer import fit_transformer

    started = time.perf_counter()
    member_cfg = dataclasses.replace(cfg, calibrate=False)
    members = {"linear": fit_linear_model(member_cfg, train_data, val_data, test_data),
               "transformer": fit_transformer(member_cfg, limit_rows(train_data, cfg.max_train_samples, cfg.seed),
                                              val_data, test_data)}
    metrics, val_probs, test_probs = combine_members(member_cfg, members, val_data, test_data,
                                                     time.perf_counter() - started)
    weights = metrics["ensemble_weights"]
    t = members["transformer"]
    return Fitted(model=members, tokenizer=t.tokenizer, metrics=metrics, calibration=None,
                  max_length=t.max_length, steps=t.steps, device=t.device, dtype=t.dtype, val_probs=val_probs,
                  test_probs=test_probs, kind="ensemble", ensemble_weights=weights)


def combine_members(cfg, members: dict, val_data, test_data,
                    seconds: float) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """The ensemble of fitted members (each with val_probs, test_probs and its metrics): weights fitted
    on the validation split, then the ensemble's metrics (with the weights and each member's reports),
    validation and test probabilities. bench/quality/accuracy.py also calls it with a transformer member whose
    probabilities were computed on another machine."""
    from .fitted import metrics_from_article_logits

    weights = fit_weights({m: f.val_probs for m, f in members.items()}, val_data.labels)
    log.info("ensemble weights: " + ", ".join(f"{m} {w:.3f}" for m, w in weights.items()))
    val_logits = combined_logits({m: f.val_probs for m, f in members.items()}, weights)
    test_logits = (combined_logits({m: f.test_probs for m, f in members.items()}, weights)
                   if test_data is not None else None)
    train_loss = float(np.mean([f.metrics["epochs"][-1]["train_loss"] for f in members.values()]))
    metrics, _, val_probs, test_probs = metrics_from_article_logits(
        cfg, val_data, val_logits, test_data, test_logits, train_loss, seconds)
    metrics["ensemble_weights"] = weights
    metrics["members"] = {m: {"validation": f.metrics["validation"], "test": f.metrics["test"],
                              "best_epoch": f.metrics["best_epoch"], "epochs": f.metrics["epochs"]}
                          for m, f in members.items()}
    return metrics, val_probs, test_probs
