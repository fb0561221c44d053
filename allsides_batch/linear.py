"""The full-text linear model: TF-IDF over word 1-2-grams of the whole article (sublinear tf, l2 norm)
and a multinomial logistic regression (scikit-learn).

A transformer reads the first 128-512 tokens; about 90% of the shared articles are longer than 512.
This model reads every word, trains in about 3 minutes on 2 CPU cores (the shared data, refit
included) and scores about 1,800 articles a second there without a GPU; docs/results.md compares it
with the transformer on unseen outlets.

Saved without pickle: `vectorizer.json` (analyzer settings and the vocabulary in column order) and
`linear.safetensors` (idf (V,), coef (C, V), intercept (C,)). `LinearModel.load` rebuilds exactly the
transform that training used; tests check that a reloaded model gives the same probabilities.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

from . import LABELS
from .errors import UserError

VECTORIZER_FILE = "vectorizer.json"
WEIGHTS_FILE = "linear.safetensors"
# scikit-learn's default word pattern: runs of two or more word characters.
TOKEN_PATTERN = r"(?u)\b\w\w+\b"


@dataclass
class LinearModel:
    """TF-IDF features + linear classifier; logits (N, C) in left/center/right order."""

    vocabulary: list[str]         # (V,) term of each feature column
    idf: np.ndarray               # (V,) float32
    coef: np.ndarray              # (C, V) float32
    intercept: np.ndarray         # (C,) float32
    ngram_max: int = 2
    lowercase: bool = True
    token_pattern: str = TOKEN_PATTERN
    _index: object = field(default=None, init=False, repr=False, compare=False)

    def _count(self, texts: list[str]):
        """((N, V) sparse raw term counts, (N,) words per text), as scikit-learn's CountVectorizer counts
        this vocabulary (lowercase, token_pattern, n-grams joined by a space; tests compare the two)."""
        import scipy.sparse as sp

        if self._index is None:
            self._index = _TermIndex(self.vocabulary, self.ngram_max, self.token_pattern, self.lowercase)
        indptr, indices, values, words = [0], [], [], np.zeros(len(texts), np.int32)
        for row, text in enumerate(texts):
            features, words[row] = self._index.features(text)
            cols, counts = np.unique(features, return_counts=True)
            indices.append(cols)
            values.append(counts)
            indptr.append(indptr[-1] + len(cols))
        counts = sp.csr_matrix((np.concatenate(values).astype(np.float32) if values else np.zeros(0, np.float32),
                                np.concatenate(indices) if indices else np.zeros(0, np.int64), indptr),
                               shape=(len(texts), len(self.vocabulary)))
        return counts, words

    def features(self, texts: list[str]):
        """(N, V) sparse TF-IDF rows: (1 + log tf) · idf, l2-normalised (scikit-learn's sublinear TF-IDF)."""
        return tfidf_rows(self._count(texts)[0], self.idf)

    def logits_and_words(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """((N, C) float32 decision values, (N,) words read per text: the scores' n_tokens)."""
        if not texts:
            return np.zeros((0, len(self.intercept)), np.float32), np.zeros(0, np.int32)
        counts, words = self._count(texts)
        x = tfidf_rows(counts, self.idf)
        return np.asarray(x @ self.coef.T, dtype=np.float32) + self.intercept[None, :], words

    def logits(self, texts: list[str]) -> np.ndarray:
        """(N, C) float32 decision values."""
        return self.logits_and_words(texts)[0]

    # ---- files
    def save(self, model_dir: str) -> None:
        from safetensors.numpy import save_file

        settings = {"analyzer": "word", "ngram_range": [1, self.ngram_max], "lowercase": self.lowercase,
                    "token_pattern": self.token_pattern, "sublinear_tf": True, "norm": "l2",
                    "labels": list(LABELS), "vocabulary": self.vocabulary}
        with open(os.path.join(model_dir, VECTORIZER_FILE), "w") as fh:
            json.dump(settings, fh, ensure_ascii=False)
        save_file({"idf": np.ascontiguousarray(self.idf, np.float32),
                   "coef": np.ascontiguousarray(self.coef, np.float32),
                   "intercept": np.ascontiguousarray(self.intercept, np.float32)},
                  os.path.join(model_dir, WEIGHTS_FILE))
        os.chmod(os.path.join(model_dir, WEIGHTS_FILE), 0o644)  # safetensors writes 0600; others read it too

    @classmethod
    def load(cls, model_dir: str) -> LinearModel:
        from safetensors.numpy import load_file

        paths = [os.path.join(model_dir, name) for name in (VECTORIZER_FILE, WEIGHTS_FILE)]
        missing = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
        if missing:
            raise UserError(f"{model_dir!r} is not a complete linear model: missing {', '.join(missing)}; "
                            "retrain it with `train --kind linear`")
        with open(paths[0]) as fh:
            settings = json.load(fh)
        weights = load_file(paths[1])
        vocab = settings["vocabulary"]
        idf, coef, intercept = weights["idf"], weights["coef"], weights["intercept"]
        if settings.get("labels") != list(LABELS) or coef.shape != (len(LABELS), len(vocab)) \
                or idf.shape != (len(vocab),) or intercept.shape != (len(LABELS),):
            raise UserError(f"{model_dir!r}: linear model files disagree (vocabulary {len(vocab)}, idf "
                            f"{idf.shape}, coef {coef.shape}, labels {settings.get('labels')}); retrain it")
        ngram = settings.get("ngram_range", [1, 2])
        return cls(vocabulary=vocab, idf=idf, coef=coef, intercept=intercept, ngram_max=int(ngram[1]),
                   lowercase=bool(settings.get("lowercase", True)),
                   token_pattern=settings.get("token_pattern", TOKEN_PATTERN))


class _TermIndex:
    """Text → the vocabulary's feature ids, one per occurrence. Words become integer ids through one dict;
    a bigram is looked up as the pair of its word ids in a sorted int64 array (numpy), so no bigram string
    is ever built: about 4x faster than scikit-learn's analyzer + dict. N-grams above 2 take the analyzer."""

    def __init__(self, vocabulary: list[str], ngram_max: int, token_pattern: str, lowercase: bool):
        import re

        self.pattern, self.lowercase, self.ngram_max = re.compile(token_pattern), lowercase, ngram_max
        if ngram_max > 2:
            from sklearn.feature_extraction.text import CountVectorizer

            self.analyzer = CountVectorizer(ngram_range=(1, ngram_max), lowercase=lowercase,
                                            token_pattern=token_pattern).build_analyzer()
            self.terms = {t: i for i, t in enumerate(vocabulary)}
            return
        self.words: dict[str, int] = {}
        unigrams, pairs = [], []
        for feature, term in enumerate(vocabulary):
            parts = term.split(" ")
            ids = [self.words.setdefault(p, len(self.words)) for p in parts]
            (unigrams if len(parts) == 1 else pairs).append((*ids, feature))
        n = max(len(self.words), 1)
        self.unigram = np.full(n, -1, np.int64)                      # word id → feature (-1: not a feature)
        if unigrams:
            u = np.asarray(unigrams, np.int64)
            self.unigram[u[:, 0]] = u[:, 1]
        b = np.asarray(pairs, np.int64).reshape(-1, 3)
        keys = b[:, 0] * n + b[:, 1]                                  # (pairs,) first word id · n + second
        order = np.argsort(keys)
        self.n, self.pair_keys, self.pair_features = n, keys[order], b[order, 2]

    def features(self, text: str) -> tuple[np.ndarray, int]:
        """(feature id of each vocabulary n-gram occurrence, words in the text)."""
        if self.lowercase:
            text = text.lower()
        if self.ngram_max > 2:
            get = self.terms.get
            grams = self.analyzer(text)
            return np.fromiter((j for j in map(get, grams) if j is not None), np.int64), \
                len(self.pattern.findall(text))
        tokens = self.pattern.findall(text)
        ids = np.fromiter(map(self.words.get, tokens, repeat(-1)), np.int64, len(tokens))  # (T,) -1: unknown
        known = ids[ids >= 0]
        uni = self.unigram[known]
        uni = uni[uni >= 0]
        if self.ngram_max == 1 or len(ids) < 2 or not len(self.pair_keys):
            return uni, len(tokens)
        first, second = ids[:-1], ids[1:]
        both = (first >= 0) & (second >= 0)
        keys = first[both] * self.n + second[both]                    # (T-1,) candidate bigrams
        pos = np.minimum(np.searchsorted(self.pair_keys, keys), len(self.pair_keys) - 1)
        hit = self.pair_keys[pos] == keys
        return np.concatenate([uni, self.pair_features[pos[hit]]]), len(tokens)


def outlet_sample_weights(sources: list[str], power: float) -> np.ndarray | None:
    """Weight 1 / n_outlet**power per article, scaled to mean 1 (None for power 0). power 1 gives every
    outlet the same total weight; 0.5 tempers the few outlets that hold 8% of the data each."""
    if power == 0:
        return None
    _, inverse, counts = np.unique(np.asarray(sources, dtype=object).astype(str), return_inverse=True,
                                   return_counts=True)
    w = 1.0 / counts[inverse].astype(np.float64) ** power
    return w * (len(w) / w.sum())


def fit_linear(texts: list[str], labels: np.ndarray, sources: list[str], *, ngram_max: int = 2,
               max_features: int | None = 200_000, min_df: int = 2, min_outlets: int = 1, c: float = 1.0,
               outlet_weight: float = 0.0, max_iter: int = 1000) -> tuple[LinearModel, float]:
    """Fit TF-IDF + multinomial logistic regression (lbfgs) on training articles.

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
    clf = LogisticRegression(C=c, max_iter=max_iter)
    weights = outlet_sample_weights(sources, outlet_weight)
    clf.fit(x, labels, sample_weight=weights)
    model.coef, model.intercept = clf.coef_.astype(np.float32), clf.intercept_.astype(np.float32)
    p = np.clip(clf.predict_proba(x)[np.arange(len(labels)), labels], 1e-12, 1.0)
    return model, float(np.average(-np.log(p), weights=weights))


def tfidf_rows(counts, idf: np.ndarray):
    """Raw counts (N, V) → (1 + log tf) · idf, l2-normalised rows (scikit-learn's sublinear TF-IDF)."""
    from sklearn.preprocessing import normalize

    x = counts.tocsr().astype(np.float32, copy=True)
    x.data = 1.0 + np.log(x.data)
    x.data *= idf[x.indices]
    return normalize(x, norm="l2", copy=False)


def fit_linear_model(cfg, train_data, val_data, test_data=None):
    """train.fit for kind linear: fit on train_data, report (and with --calibrate, fit the temperature)
    on val_data, report test_data. Returns a train.Fitted."""
    import time

    import torch

    from .calibration import softmax
    from .train import Fitted, metrics_from_article_logits

    started = time.perf_counter()
    print(f"linear: TF-IDF 1-{cfg.linear_ngram_max}-grams, {cfg.linear_max_features} features, C {cfg.linear_c}, "
          f"outlet weight {cfg.linear_outlet_weight}", file=sys.stderr)
    def fit(texts, labels, sources):  # the recipe's settings, for the first fit and the refit alike
        return fit_linear(texts, labels, sources, ngram_max=cfg.linear_ngram_max,
                          max_features=cfg.linear_max_features, min_df=cfg.linear_min_df,
                          min_outlets=cfg.linear_min_outlets, c=cfg.linear_c, outlet_weight=cfg.linear_outlet_weight)

    model, train_loss = fit(train_data.texts, train_data.labels, train_data.sources)
    val_logits = model.logits(val_data.texts)
    # Refitting on every outlet: in 5-fold outlet-grouped CV on the shared data, leaving the 10% validation
    # outlets out of the saved model cost 0.021 macro-F1 (docs/results.md).
    refit = cfg.kind == "linear" and cfg.linear_refit
    before_refit = None
    if refit and test_data is not None:  # what the refit adds, on the same test articles
        from .train import report_from_probs

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
    print(f"linear: train_loss {train_loss:.4f} val_loss {v['val_loss']:.4f} acc {v['accuracy']:.4f} "
          f"macro_f1 {v['macro_f1']:.4f}{' (before the refit on train + validation)' if refit else ''} "
          f"({metrics['train_seconds']:.0f} s)", file=sys.stderr)
    return Fitted(model=model, tokenizer=None, metrics=metrics, calibration=calibration, max_length=0, steps=0,
                  device=torch.device("cpu"), dtype=torch.float32, val_probs=val_probs, test_probs=test_probs,
                  kind="linear")
