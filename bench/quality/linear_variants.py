"""Linear-model variants on the full-data folds, cheaply: one count matrix for all articles, then per fold
and variant a TF-IDF + logistic regression trained on every article outside the held-out fold (what the
default refit model sees) and tested on the fold.

The vocabulary candidates (1-2-grams in >= 2 articles) are counted once over all articles, so an n-gram
seen only in the held-out fold can be a candidate; columns are then chosen and weighted (idf) from the
training folds only, so no label or test-fold statistic enters the model. Numbers are for ranking the
variants against each other; the protocol rows of bench/quality/accuracy.py are the reference figures.

    python -m bench.quality.linear_variants --variants base,outlet0.5,topicbal --jobs 2
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from allsides_batch.models.linear import TOKEN_PATTERN, tfidf_rows  # noqa: E402
from allsides_batch.training.data import outlet_folds  # noqa: E402
from allsides_batch.training.linear import outlet_sample_weights  # noqa: E402
from allsides_batch.training.train import report_from_probs  # noqa: E402
from bench.common import SHARED_DATA  # noqa: E402

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
    # who is covered vs how: capitalised words that do not start a sentence (names of people, parties,
    # places, outlets) removed before counting, so the model reads framing words only
    "no_proper_nouns": {"text": "no_proper_nouns"},
    # a second block: character 3-5-grams within words over each article's first 2,000 characters
    "chars": {"chars": True},
    "classbal_outlet0.5_c3": {"class_balanced": True, "outlet_weight": 0.5, "c": 3.0},
    # the neighbourhood of the one above: one setting changed at a time
    "outlet0.5_c3": {"outlet_weight": 0.5, "c": 3.0},
    "classbal_c3": {"class_balanced": True, "c": 3.0},
    "classbal_outlet0.5_c2": {"class_balanced": True, "outlet_weight": 0.5, "c": 2.0},
    "classbal_outlet0.5_c10": {"class_balanced": True, "outlet_weight": 0.5, "c": 10.0},
    "classbal_outlet0.75_c3": {"class_balanced": True, "outlet_weight": 0.75, "c": 3.0},
    "classbal_outlet1_c3": {"class_balanced": True, "outlet_weight": 1.0, "c": 3.0},
    # center vs the rest, then left vs right on the left and right articles alone:
    # p_left = (1 - p_center) (1 - p_right|partisan), p_right = (1 - p_center) p_right|partisan
    "hierarchical": {"hierarchical": True},
    # 10 models, each on a seeded 70% of the training outlets, probabilities averaged
    "outlet_bagging": {"bags": 10},
    # the 50k columns whose outlet means (each outlet one point) best separate the outlet labels (F test)
    "outlet_level_selection": {"select_outlet_k": 50_000},
}

CACHES = {"plain": CACHE, "no_proper_nouns": "/tmp/linear_variants_counts_no_proper_nouns.npz"}
CHAR_CACHE = "/tmp/linear_variants_chars.npz"
_PROPER = re.compile(r"(?<![.!?\n:\"“]\s)(?<!^)(?<=\s)[A-Z][\w'’.-]*")


def load(with_text: bool = True):
    import pyarrow.parquet as pq

    cols = ["title", "text"] if with_text else []
    t = pq.read_table(SHARED_DATA, columns=cols + ["source", "bias", "topic"]).to_pydict()
    texts = [f"{a or ''}\n{b or ''}" for a, b in zip(t["title"], t["text"])] if with_text else None
    return texts, np.asarray(t["bias"], dtype=np.int64), [str(s) for s in t["source"]], [str(x) for x in t["topic"]]


def drop_proper_nouns(text: str) -> str:
    """The text without capitalised words that do not open a sentence (or a line, or a quote)."""
    return _PROPER.sub(" ", text)


def counts_matrix(texts, text_variant: str = "plain"):
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import CountVectorizer

    cache = CACHES[text_variant]
    if os.path.exists(cache):
        return sp.load_npz(cache).tocsr()
    if text_variant == "no_proper_nouns":
        texts = [drop_proper_nouns(t) for t in texts]
    counter = CountVectorizer(ngram_range=(1, 2), min_df=2, lowercase=True, token_pattern=TOKEN_PATTERN,
                              dtype=np.float32)
    m = counter.fit_transform(texts).tocsr()
    sp.save_npz(cache, m, compressed=False)
    return m


def char_matrix(texts):
    """Hashed character 3-5-gram counts (within word boundaries) of each text's first 2,000 characters."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import HashingVectorizer

    if os.path.exists(CHAR_CACHE):
        return sp.load_npz(CHAR_CACHE).tocsr()
    hasher = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5), n_features=2 ** 20, alternate_sign=False,
                               norm=None, lowercase=True, dtype=np.float32)
    m = hasher.transform([t[:2000] for t in texts]).tocsr()
    sp.save_npz(CHAR_CACHE, m, compressed=False)
    return m


def char_block(tr, te):
    """TF-IDF of the char block, idf from the training rows, columns seen in >= 2 training articles."""
    m = char_matrix(None)
    ctr = m[tr]
    df = np.diff(ctr.tocsc().indptr)
    cols = np.flatnonzero(df >= 2)
    idf = (np.log((1.0 + len(tr)) / (1.0 + df[cols])) + 1.0).astype(np.float32)
    return tfidf_rows(ctr[:, cols], idf), tfidf_rows(m[te][:, cols], idf)


def run(args):
    fold, name, settings, seed = args
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    _, labels, sources, topics = load(with_text=False)
    counts = counts_matrix(None, settings.get("text", "plain"))
    assign = outlet_folds(sources, labels, 5, seed)
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
    if settings.get("chars"):  # two l2-normalised blocks side by side
        ctr_c, cte_c = char_block(tr, te)
        xtr, xte = sp.hstack([xtr, ctr_c]).tocsr(), sp.hstack([xte, cte_c]).tocsr()
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
    trs = [sources[i] for i in tr]
    if settings.get("select_outlet_k"):
        from sklearn.feature_selection import f_classif

        _, outlet = np.unique(np.asarray(trs, dtype=object).astype(str), return_inverse=True)
        member = sp.csr_matrix((np.ones(len(tr), np.float32), (outlet, np.arange(len(tr)))))
        sizes = np.asarray(member.sum(axis=1)).ravel()
        means = sp.diags(1.0 / sizes) @ (member @ xtr)                    # (outlets, V) mean tf-idf
        outlet_label = np.zeros(len(sizes), dtype=np.int64)
        outlet_label[outlet] = ytr                                         # every outlet has one label here
        f, _ = f_classif(means, outlet_label)
        top = np.argsort(-np.nan_to_num(f), kind="stable")[:settings["select_outlet_k"]]
        xtr, xte = xtr[:, top], xte[:, top]
    if settings.get("hierarchical"):
        c = settings.get("c", 1.0)
        center = LogisticRegression(C=c, max_iter=1000).fit(xtr, (ytr == 1).astype(int), sample_weight=w)
        partisan = ytr != 1
        lr = LogisticRegression(C=c, max_iter=1000).fit(xtr[partisan], (ytr[partisan] == 2).astype(int),
                                                        sample_weight=w[partisan])
        pc, pr = center.predict_proba(xte)[:, 1], lr.predict_proba(xte)[:, 1]
        probs = np.stack([(1 - pc) * (1 - pr), pc, (1 - pc) * pr], 1)
    elif settings.get("bags"):
        rng = np.random.default_rng(seed + fold)
        names = np.unique(trs)
        probs = np.zeros((len(te), 3))
        for _ in range(settings["bags"]):
            chosen = set(rng.choice(names, size=int(0.7 * len(names)), replace=False).tolist())
            rows = np.flatnonzero([x in chosen for x in trs])
            clf = LogisticRegression(C=settings.get("c", 1.0), max_iter=1000).fit(xtr[rows], ytr[rows],
                                                                                sample_weight=w[rows])
            probs += clf.predict_proba(xte) / settings["bags"]
    elif settings.get("nbsvm"):  # Wang & Manning 2012: features scaled by the class's log-count ratio, one vs rest
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
    np.savez(f"/tmp/lv_probs_{name}_{fold}_{seed}.npz", te=te, probs=probs)
    rep = report_from_probs(labels[te], [sources[i] for i in te], probs)
    return {"fold": fold, "variant": name, "seed": seed, "macro_f1": rep["macro_f1"], "accuracy": rep["accuracy"],
            "ece": rep["ece"], "spearman": rep["outlets"]["spearman"], "outlets": rep["outlets"]["outlets"],
            "features": int(len(cols)), "fit_seconds": round(time.perf_counter() - started, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="base", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=12345,
                    help="outlet-grouped folds seed: 12345 is the protocol's; another checks a choice made on those")
    ap.add_argument("--out", default="/tmp/linear_variants.jsonl")
    args = ap.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    texts = None
    needed = {VARIANTS[n].get("text", "plain") for n in names} | {"plain"}
    for variant in sorted(needed):
        if not os.path.exists(CACHES[variant]):
            texts = texts or load()[0]
            started = time.perf_counter()
            m = counts_matrix(texts, variant)
            print(f"counted {variant}: {m.shape} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if any(VARIANTS[n].get("chars") for n in names) and not os.path.exists(CHAR_CACHE):
        texts = texts or load()[0]
        started = time.perf_counter()
        m = char_matrix(texts)
        print(f"hashed characters: {m.shape}, {m.nnz} non-zeros in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
    del texts
    tasks = [(f, n, VARIANTS[n], args.seed) for n in names for f in range(5)]
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
