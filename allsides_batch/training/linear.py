"""The full-text linear model: TF-IDF over word 1-2-grams of the whole article (sublinear tf, l2 norm)
and a multinomial logistic regression (scikit-learn).

A transformer reads the first 128-512 tokens; most shared articles are longer than 512. This model
reads every word and trains and scores on a CPU without a GPU: README.md gives its training time on
the shared data, docs/scoring.md ("Linear model") its scoring speed, and docs/results.md compares it
with the transformer on unseen outlets.

Saved without pickle by linear_model.LinearModel: `vectorizer.json` (analyzer settings and the vocabulary
in column order) and `linear.safetensors` (idf (V,), coef (C, V), intercept (C,)); tests check that a
reloaded model gives the same probabilities.
"""

from __future__ import annotations

import logging

import numpy as np

from .. import LABELS
from ..errors import UserError
from ..models.linear import TOKEN_PATTERN, LinearModel, tfidf_rows

__all__ = ["LinearModel", "TOKEN_PATTERN", "fit_linear_model", "fit_recipe", "fit_tfidf_logreg",
           "outlet_sample_weights", "tfidf_rows"]

log = logging.getLogger(__name__)


def outlet_sample_weights(sources: list[str], power: float) -> np.ndarray | None:
    """Weight 1 / n_outlet**power per article, scaled to mean 1 (None for power 0). power 1 gives every
    outlet the same total weight; 0.5 tempers the few outlets that hold 8% of the data each."""
    if power == 0:
        return None
    _, inverse, counts = np.unique(np.asarray(sources, dtype=object).astype(str), return_inverse=True,
                                   return_counts=True)
    w = 1.0 / counts[inverse].astype(np.float64) ** power
    return w * (len(w) / w.sum())


def fit_tfidf_logreg(  # noqa: PLR0913 (keyword options mirroring scikit-learn's TfidfVectorizer and LogisticRegression)
    texts: list[str], labels: np.ndarray, sources: list[str], *, ngram_max: int = 2,
    max_features: int | None = 200_000, min_df: int = 2, min_outlets: int = 1, c: float = 1.0,
    outlet_weight: float = 0.0, class_weight: str = "none", max_iter: int = 1000,
) -> tuple[LinearModel, float]:
    """Fit TF-IDF + multinomial logistic regression (lbfgs) on training articles' texts: the estimator
    alone, no split, report or refit (fit_linear_model, kind linear's train.fit, does those).

    The vocabulary: n-grams in at least `min_df` articles and in articles of at least `min_outlets`
    outlets (a term only one outlet uses is its signature, not slant), the `max_features` most frequent of
    those. TF-IDF as scikit-learn's TfidfVectorizer(sublinear_tf=True): smooth idf, l2 rows.
    Returns the model and its (weighted) log loss on the training articles."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels)
    present = sorted(set(labels.tolist()))
    if present != list(range(len(LABELS))):
        names = [LABELS[i] for i in present]
        raise UserError(f"the training split holds labels {names} only; a linear model needs articles of all of "
                        f"{', '.join(LABELS)}")
    counter = CountVectorizer(ngram_range=(1, ngram_max), min_df=min(min_df, len(texts)), lowercase=True,
                              token_pattern=TOKEN_PATTERN, dtype=np.float32)
    try:
        counts = counter.fit_transform(texts).tocsr()  # (N, V_all) raw counts, columns in term order
    except ValueError as exc:  # empty vocabulary: no word occurs in min_df articles
        raise UserError(f"no usable vocabulary ({exc}); give more articles or lower --linear-min-df") from exc
    present_in = counts.copy()
    present_in.data[:] = 1.0                                               # (N, V_all) 0/1
    df = np.asarray(present_in.sum(axis=0)).ravel()                        # (V_all,) articles per term
    keep = np.ones(counts.shape[1], dtype=bool)
    if min_outlets > 1:
        _, outlet = np.unique(np.asarray(sources, dtype=object).astype(str), return_inverse=True)
        membership = sp.csr_matrix((np.ones(len(texts), np.float32), (outlet, np.arange(len(texts)))))
        outlets_per_term = np.asarray(((membership @ present_in) > 0).sum(axis=0)).ravel()  # (V_all,)
        keep &= outlets_per_term >= min_outlets
    cols = np.flatnonzero(keep)
    if max_features is not None and len(cols) > max_features:
        total = np.asarray(counts.sum(axis=0)).ravel()
        cols = np.sort(cols[np.argsort(-total[cols], kind="stable")[:max_features]])
    if len(cols) == 0:
        raise UserError(f"no term occurs in articles of {min_outlets} outlets; lower --linear-min-outlets")
    names = counter.get_feature_names_out()
    idf = (np.log((1.0 + len(texts)) / (1.0 + df[cols])) + 1.0).astype(np.float32)
    model = LinearModel(vocabulary=names[cols].tolist(), idf=idf, coef=np.zeros((len(LABELS), len(cols)), np.float32),
                        intercept=np.zeros(len(LABELS), np.float32), ngram_max=ngram_max)
    x = tfidf_rows(counts[:, cols], idf)                                   # (N, V)
    del counts, present_in
    clf = LogisticRegression(C=c, max_iter=max_iter, class_weight="balanced" if class_weight == "balanced" else None)
    weights = outlet_sample_weights(sources, outlet_weight)
    clf.fit(x, labels, sample_weight=weights)
    model.coef, model.intercept = clf.coef_.astype(np.float32), clf.intercept_.astype(np.float32)
    p = np.clip(clf.predict_proba(x)[np.arange(len(labels)), labels], 1e-12, 1.0)
    return model, float(np.average(-np.log(p), weights=weights))


def fit_recipe(cfg, texts, labels, sources) -> tuple[LinearModel, float]:
    """fit_tfidf_logreg with a TrainConfig's linear_* settings (the first fit, the refit and the outlet
    rule's out-of-fold fits alike)."""
    return fit_tfidf_logreg(texts, labels, sources, ngram_max=cfg.linear_ngram_max,
                            max_features=cfg.linear_max_features, min_df=cfg.linear_min_df,
                            min_outlets=cfg.linear_min_outlets, c=cfg.linear_c,
                            outlet_weight=cfg.linear_outlet_weight, class_weight=cfg.linear_class_weight)


def fit_linear_model(cfg, train_data, val_data, test_data=None):
    """train.fit for kind linear (as fit_transformer, fit_ensemble): fit on train_data, report (and with
    --calibrate, fit the temperature) on val_data, refit, report test_data. Returns a train.Fitted."""
    import time

    import torch

    from ..models.calibration import softmax
    from .fitted import Fitted, metrics_from_article_logits

    started = time.perf_counter()
    log.info(f"linear: TF-IDF 1-{cfg.linear_ngram_max}-grams, {cfg.linear_max_features} features, C {cfg.linear_c}, "
             f"outlet weight {cfg.linear_outlet_weight}")
    def fit(texts, labels, sources):
        return fit_recipe(cfg, texts, labels, sources)

    model, train_loss = fit(train_data.texts, train_data.labels, train_data.sources)
    val_logits = model.logits(val_data.texts)
    # Refitting on every outlet: what leaving the validation outlets out of the saved model costs, in
    # outlet-grouped CV on the shared data, is in docs/results.md ("Refit on training + validation").
    refit = cfg.kind == "linear" and cfg.linear_refit
    before_refit = None
    if refit and test_data is not None:  # what the refit adds, on the same test articles
        from .fitted import report_from_probs

        before_refit = report_from_probs(test_data.labels, test_data.sources, softmax(model.logits(test_data.texts)))
    if refit:
        model, train_loss = fit(train_data.texts + val_data.texts,
                                np.concatenate([train_data.labels, val_data.labels]),
                                train_data.sources + val_data.sources)
    test_logits = model.logits(test_data.texts) if test_data is not None else None
    metrics, calibration, val_probs, test_probs = metrics_from_article_logits(
        cfg, val_data, val_logits, test_data, test_logits, train_loss, time.perf_counter() - started)
    metrics["refit_on_validation"] = refit
    metrics["test_before_refit"] = before_refit
    v = metrics["validation"]
    log.info(f"linear: train_loss {train_loss:.4f} val_loss {v['val_loss']:.4f} acc {v['accuracy']:.4f} "
             f"macro_f1 {v['macro_f1']:.4f}{' (before the refit on train + validation)' if refit else ''} "
             f"({metrics['train_seconds']:.0f} s)")
    return Fitted(model=model, tokenizer=None, metrics=metrics, calibration=calibration, max_length=0, steps=0,
                  device=torch.device("cpu"), dtype=torch.float32, val_probs=val_probs, test_probs=test_probs,
                  kind="linear")
