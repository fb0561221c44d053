"""The linear model as saved and scored: a TF-IDF vocabulary with idf weights and a multinomial logistic
regression's coefficients (`vectorizer.json` + `linear.safetensors`, no pickle). Fitting it is
training/linear.py."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

from .. import LABELS
from ..errors import UserError
from .files import LINEAR_WEIGHTS_FILE, RETRAIN, VECTORIZER_FILE, load_weights, read_model_json

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

    def bias_weights(self) -> np.ndarray:
        """(V,) each term's weight on the bias logit, logit_right − logit_left: coef_right − coef_left."""
        return (self.coef[LABELS.index("right")] - self.coef[LABELS.index("left")]).astype(np.float64)

    def bias_intercept(self) -> float:
        """The bias logit's constant: intercept_right − intercept_left."""
        return float(self.intercept[LABELS.index("right")] - self.intercept[LABELS.index("left")])

    def strongest_terms(self, top: int = 20) -> dict[str, list[tuple[str, float]]]:
        """The `top` terms with the largest bias weights each way: what pushes any article right or left."""
        w = self.bias_weights()
        order = np.argsort(w, kind="stable")
        return {"right": [(self.vocabulary[i], float(w[i])) for i in order[::-1][:top]],
                "left": [(self.vocabulary[i], float(w[i])) for i in order[:top]]}

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
                  os.path.join(model_dir, LINEAR_WEIGHTS_FILE))
        os.chmod(os.path.join(model_dir, LINEAR_WEIGHTS_FILE), 0o644)  # safetensors writes 0600; others read it too

    @classmethod
    def load(cls, model_dir: str) -> LinearModel:
        """The model saved in `model_dir`; a UserError naming the file when one is missing or damaged or a
        weight is not finite (a diverged fit)."""
        paths = [os.path.join(model_dir, name) for name in (VECTORIZER_FILE, LINEAR_WEIGHTS_FILE)]
        missing = [os.path.basename(p) for p in paths if not os.path.isfile(p)]
        if missing:
            raise UserError(f"{model_dir!r} is not a complete linear model: missing {', '.join(missing)}; "
                            "retrain it with `train --kind linear`")
        settings = read_model_json(paths[0], ["vocabulary"])
        weights = load_weights(paths[1], ["idf", "coef", "intercept"])  # every weight finite
        vocab = settings["vocabulary"]
        idf, coef, intercept = weights["idf"], weights["coef"], weights["intercept"]
        ngram = settings.get("ngram_range", [1, 2])
        if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab) \
                or not isinstance(ngram, list) or len(ngram) != 2 or not all(isinstance(n, int) for n in ngram):
            raise UserError(f"{paths[0]} is damaged: vocabulary is not a list of terms or ngram_range not two "
                            f"integers; {RETRAIN}")
        if settings.get("labels") != list(LABELS) or coef.shape != (len(LABELS), len(vocab)) \
                or idf.shape != (len(vocab),) or intercept.shape != (len(LABELS),):
            raise UserError(f"{model_dir!r}: linear model files disagree (vocabulary {len(vocab)}, idf "
                            f"{idf.shape}, coef {coef.shape}, labels {settings.get('labels')}); retrain it")
        return cls(vocabulary=vocab, idf=idf, coef=coef, intercept=intercept, ngram_max=int(ngram[1]),
                   lowercase=bool(settings.get("lowercase", True)),
                   token_pattern=settings.get("token_pattern", TOKEN_PATTERN))


class _TermIndex:
    """Text → the vocabulary's feature ids, one per occurrence. Words become integer ids through one dict;
    a bigram is looked up as the pair of its word ids in a sorted int64 array (numpy), so no bigram string
    is ever built: faster than scikit-learn's analyzer + dict with identical counts (docs/scoring.md, "Linear
    model", has the measured speed-up). N-grams above 2 take the analyzer."""

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


def tfidf_rows(counts, idf: np.ndarray):
    """Raw counts (N, V) → (1 + log tf) · idf, l2-normalised rows (scikit-learn's sublinear TF-IDF)."""
    from sklearn.preprocessing import normalize

    x = counts.tocsr().astype(np.float32, copy=True)
    x.data = 1.0 + np.log(x.data)
    x.data *= idf[x.indices]
    return normalize(x, norm="l2", copy=False)


