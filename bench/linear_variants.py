"""Linear-model variants on the full-data folds, cheaply: one count matrix for all articles, then per fold
and variant a TF-IDF + logistic regression trained on every article outside the held-out fold (what the
default refit model sees) and tested on the fold.

The vocabulary candidates (1-2-grams in >= 2 articles) are counted once over all articles, so an n-gram
seen only in the held-out fold can be a candidate; columns are then chosen and weighted (idf) from the
training folds only, so no label or test-fold statistic enters the model. Numbers are for ranking the
variants against each other; the protocol rows of bench/accuracy.py are the reference figures.

    python bench/linear_variants.py --variants base,outlet0.5,topicbal --jobs 2
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from allsides_batch.linear_model import TOKEN_PATTERN, tfidf_rows
from allsides_batch.training.data import outlet_folds  # noqa: E402
from allsides_batch.training.linear import outlet_sample_weights  # noqa: E402
from allsides_batch.training.train import report_from_probs  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "allsides",
                    "articles.parquet")
CACHE = "/tmp/linear_variants_counts.npz"

# name -> settings; every variant trains on all non-test folds
VARIANTS = {
    "base": {},
    "c0.3": {"c": 0.3},
    "c3": {"c": 3.0},
    "outlet0.5": {"outlet_weight": 0.5},
    "outlet1": {"outlet_weight": 1.0},
    "classbal": {"class_balanced": True},
    "topicbal": {"topic_balanced": True},
    "minoutlets5": {"min_outlets": 5},
    "minoutlets20": {"min_outlets": 20},
    "maxf50k": {"max_features": 50_000},
    "maxf500k": {"max_features": 500_000},
    "classbal_outlet0.5": {"class_balanced": True, "outlet_weight": 0.5},
    "binary": {"binary": True},
    "nbsvm": {"nbsvm": True},
    "nbsvm_classbal": {"nbsvm": True, "class_balanced": True},
}


def load(with_text: bool = True):
    import pyarrow.parquet as pq

    cols = ["title", "text"] if with_text else []
    t = pq.read_table(DATA, columns=cols + ["source", "bias", "topic"]).to_pydict()
    texts = [f"{a or ''}\n{b or ''}" for a, b in zip(t["title"], t["text"])] if with_text else None
    return texts, np.asarray(t["bias"], dtype=np.int64), [str(s) for s in t["source"]], [str(x) for x in t["topic"]]


def counts_matrix(texts):
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import CountVectorizer

    if os.path.exists(CACHE):
        return sp.load_npz(CACHE).tocsr()
    counter = CountVectorizer(ngram_range=(1, 2), min_df=2, lowercase=True, token_pattern=TOKEN_PATTERN,
                              dtype=np.float32)
    m = counter.fit_transform(texts).tocsr()
    sp.save_npz(CACHE, m, compressed=False)
    return m


def run(args):
    fold, name, settings = args
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    _, labels, sources, topics = load(with_text=False)
    counts = counts_matrix(None)
    assign = outlet_folds(sources, labels, 5, 12345)
    tr, te = np.flatnonzero(assign != fold), np.flatnonzero(assign == fold)
    ctr = counts[tr]
    present = ctr.copy()
    present.data[:] = 1.0
    df = np.asarray(present.sum(axis=0)).ravel()
    keep = df >= 2
    min_outlets = settings.get("min_outlets", 1)
    if min_outlets > 1:
        _, outlet = np.unique(np.asarray(sources, dtype=object)[tr].astype(str), return_inverse=True)
        member = sp.csr_matrix((np.ones(len(tr), np.float32), (outlet, np.arange(len(tr)))))
        keep &= np.asarray(((member @ present) > 0).sum(axis=0)).ravel() >= min_outlets
    cols = np.flatnonzero(keep)
    max_features = settings.get("max_features", 200_000)
    if len(cols) > max_features:
        total = np.asarray(ctr.sum(axis=0)).ravel()
        cols = np.sort(cols[np.argsort(-total[cols], kind="stable")[:max_features]])
    idf = (np.log((1.0 + len(tr)) / (1.0 + df[cols])) + 1.0).astype(np.float32)
    ctr, cte = ctr[:, cols], counts[te][:, cols]
    if settings.get("binary"):
        ctr.data[:] = 1.0
        cte = cte.copy()
        cte.data[:] = 1.0
    xtr, xte = tfidf_rows(ctr, idf), tfidf_rows(cte, idf)
    ytr = labels[tr]
    w = outlet_sample_weights([sources[i] for i in tr], settings.get("outlet_weight", 0.0))
    w = np.ones(len(tr)) if w is None else w
    if settings.get("class_balanced"):
        w = w / np.bincount(ytr)[ytr]
    if settings.get("topic_balanced"):  # within each topic every label carries the same total weight
        key = np.asarray([f"{topics[i]}|{y}" for i, y in zip(tr, ytr)])
        _, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
        w = w / cnt[inv]
    w = w * (len(w) / w.sum())
    started = time.perf_counter()
    if settings.get("nbsvm"):  # Wang & Manning 2012: features scaled by the class's log-count ratio, one vs rest
        scores = []
        for k in range(3):
            pos = np.asarray(xtr[ytr == k].sum(axis=0)).ravel() + 1.0
            neg = np.asarray(xtr[ytr != k].sum(axis=0)).ravel() + 1.0
            r = np.log((pos / pos.sum()) / (neg / neg.sum())).astype(np.float32)
            clf = LogisticRegression(C=settings.get("c", 1.0), max_iter=1000).fit(
                xtr.multiply(r).tocsr(), (ytr == k).astype(int), sample_weight=w)
            scores.append(clf.decision_function(xte.multiply(r).tocsr()))
        z = np.stack(scores, 1)
        z = np.exp(z - z.max(1, keepdims=True))
        probs = z / z.sum(1, keepdims=True)
    else:
        clf = LogisticRegression(C=settings.get("c", 1.0), max_iter=1000).fit(xtr, ytr, sample_weight=w)
        probs = clf.predict_proba(xte)
    np.savez(f"/tmp/lv_probs_{name}_{fold}.npz", te=te, probs=probs)
    rep = report_from_probs(labels[te], [sources[i] for i in te], probs)
    return {"fold": fold, "variant": name, "macro_f1": rep["macro_f1"], "accuracy": rep["accuracy"],
            "ece": rep["ece"], "spearman": rep["outlets"]["spearman"], "outlets": rep["outlets"]["outlets"],
            "features": int(len(cols)), "fit_seconds": round(time.perf_counter() - started, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="base", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="/tmp/linear_variants.jsonl")
    args = ap.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    if not os.path.exists(CACHE):
        texts, *_ = load()
        started = time.perf_counter()
        m = counts_matrix(texts)
        print(f"counted {m.shape} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    tasks = [(f, n, VARIANTS[n]) for n in names for f in range(5)]
    results = []
    with ProcessPoolExecutor(args.jobs) as pool, open(args.out, "a") as out:
        for r in pool.map(run, tasks):
            print(json.dumps(r), flush=True)
            out.write(json.dumps(r) + "\n")
            results.append(r)
    base = {r["fold"]: r for r in results if r["variant"] == names[0]}
    for n in names:
        rows = [r for r in results if r["variant"] == n]
        line = [n]
        for k in ("macro_f1", "accuracy", "ece", "spearman"):
            v = np.array([r[k] for r in rows])
            d = np.array([r[k] - base[r["fold"]][k] for r in rows])
            line.append(f"{k} {v.mean():.3f}±{v.std(ddof=1):.3f} (Δ {d.mean():+.3f}±{d.std(ddof=1):.3f})")
        print(" | ".join(line))


if __name__ == "__main__":
    main()
