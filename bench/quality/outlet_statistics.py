"""Which per-outlet statistic of the same out-of-fold article probabilities ranks unseen outlets best?

The protocol's outlet Spearman (bench/quality/accuracy.py, metrics.outlet_agreement) ranks each held-out outlet
by the mean of p_right − p_left over its articles. This study keeps the model fixed (the `train`
defaults: TF-IDF + logistic regression, refit on training + validation) and changes only the statistic:

    python -m bench.quality.outlet_statistics             # fits the 5 folds once, then analyses the cache
    python -m bench.quality.outlet_statistics --refresh   # refit and overwrite the cache

Step 1 runs the package's own fold code path (load_labelled, outlet_folds with seed 12345, make_split
for the inner validation split, training.train.fit) one fold at a time on one core, and caches every
test article's probabilities, outlet and label, and the inner validation articles' probabilities
(before the refit; used by the quantification statistics) under runs/outlet_statistics/. Step 2
computes, per fold, Spearman (and Pearson) between each statistic and the outlet's rating over outlets
with at least OUTLET_MIN_ARTICLES test articles. The rating is the outlet's majority label (left 0,
center 1, right 2), as metrics.outlet_agreement takes it; −1/0/+1 gives the same ranks.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core: the machine is shared
    os.environ.setdefault(_var, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from bench.common import REPO, SHARED_DATA  # noqa: E402

CACHE = REPO / "runs" / "outlet_statistics"
FOLDS = 5


# ----------------------------------------------------------------------------------------------- step 1

def fit_folds(data_path: str, cache: Path, refresh: bool) -> None:
    """Out-of-fold probabilities of the default recipe, one fold at a time, each fold cached as it ends."""
    from allsides_batch.config import TrainConfig
    from allsides_batch.training.data import load_labelled, make_split, outlet_folds
    from allsides_batch.training.train import fit, text_prep

    cache.mkdir(parents=True, exist_ok=True)
    todo = [f for f in range(FOLDS) if refresh or not (cache / f"fold{f}.npz").is_file()]
    if not todo:
        print(f"step 1: every fold cached in {cache} (0 s; --refresh to refit)")
        return
    cfg = TrainConfig(data=[data_path])  # the `train` defaults: kind linear, refit on, no calibration
    t0 = time.perf_counter()
    data = load_labelled(cfg.data, cfg.columns, prep=text_prep(cfg), fingerprint=False)
    assign = outlet_folds(data.groups(cfg.group_by), data.labels, FOLDS, cfg.seed)
    print(f"step 1: loaded {len(data)} articles, {len(set(data.sources))} outlets "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    for f in todo:
        tf = time.perf_counter()
        rest = data.subset(np.flatnonzero(assign != f))
        test = data.subset(np.flatnonzero(assign == f))
        # as cv._run_fold: the inner outlet-grouped validation split, then fit (which refits on train + val)
        train_idx, val_idx = make_split(rest, cfg.split, cfg.val_fraction, cfg.seed, cfg.group_by)
        val = rest.subset(val_idx)
        fitted = fit(cfg, rest.subset(train_idx), val, test)
        np.savez_compressed(
            cache / f"fold{f}.npz",
            test_probs=np.asarray(fitted.test_probs, np.float64), test_labels=test.labels,
            test_sources=np.asarray(test.sources, dtype=str),
            val_probs=np.asarray(fitted.val_probs, np.float64), val_labels=val.labels,
            rest_labels=rest.labels,
            package_spearman=np.float64(fitted.metrics["test"]["outlets"]["spearman"]),
            package_macro_f1=np.float64(fitted.metrics["test"]["macro_f1"]))
        print(f"step 1: fold {f}: {len(train_idx)} train / {len(val_idx)} val / {len(test)} test articles, "
              f"{time.perf_counter() - tf:.0f} s", flush=True)
    print(f"step 1: {len(todo)} fold(s) fitted in {time.perf_counter() - t0:.0f} s (loading included)", flush=True)


# ----------------------------------------------------------------------------------------------- step 2

def _simplex_solve(m: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The class shares pi >= 0, sum 1, that best explain observed q = m.T @ pi (least squares)."""
    from scipy.optimize import nnls

    w = 1e3  # the sum-to-one row, weighted to hold (near) exactly
    a = np.vstack([m.T, w * np.ones((1, m.shape[0]))])
    pi, _ = nnls(a, np.append(q, w))
    return pi / pi.sum()


def _em_prior(probs: np.ndarray, train_prior: np.ndarray, iters: int = 200) -> np.ndarray:
    """Saerens, Latinne & Decaestecker (2002): the outlet's label prior by EM over its articles' posteriors."""
    pi = train_prior.copy()
    for _ in range(iters):
        adj = probs * (pi / train_prior)[None, :]
        adj /= adj.sum(axis=1, keepdims=True)
        new = adj.mean(axis=0)
        if np.abs(new - pi).max() < 1e-9:
            return new
        pi = new
    return pi


STATISTICS = {
    "mean(pR-pL) [current]": "mean over articles of p_right − p_left (= PCC: mean p_right − mean p_left)",
    "median(pR-pL)": "median over articles of p_right − p_left",
    "trim20 mean(pR-pL)": "20% trimmed mean (drop lowest and highest 20%) of p_right − p_left",
    "trim10 mean(pR-pL)": "10% trimmed mean of p_right − p_left",
    "centered mean(pR-pL)": "E = p_right − p_left minus the fold's mean E, then the outlet mean",
    "mean log(pR/pL)": "mean over articles of log p_right − log p_left (= logit_right − logit_left)",
    "CC share R - share L": "argmax labels: share predicted right − share predicted left (classify and count)",
    "ACC pi_R - pi_L": "adjusted classify and count: solve q = M^T pi on the simplex, M = P(pred|true) on inner val",
    "PACC pi_R - pi_L": "probabilistic ACC: M[i] = mean probs of inner-val articles of true class i",
    "EM pi_R - pi_L": "EM prior adjustment (Saerens 2002), training-label prior as start; pi_right − pi_left",
    "naive-Bayes P(R)-P(L)": "outlet posterior with articles independent: log P(c) ∝ Σ log p_c − (n−1) log prior_c",
}


def outlet_statistics(probs: np.ndarray, pred: np.ndarray, m_acc: np.ndarray, m_pacc: np.ndarray,
                      train_prior: np.ndarray, fold_mean_e: float) -> dict[str, float]:
    from scipy.stats import trim_mean

    p = np.clip(probs, 1e-12, 1.0)
    e = probs[:, 2] - probs[:, 0]
    share = np.bincount(pred, minlength=3) / len(pred)
    acc = _simplex_solve(m_acc, share)
    pacc = _simplex_solve(m_pacc, probs.mean(axis=0))
    em = _em_prior(p / p.sum(axis=1, keepdims=True), train_prior)
    log_post = np.log(p).sum(axis=0) - (len(p) - 1) * np.log(train_prior)
    post = np.exp(log_post - log_post.max())
    post /= post.sum()
    return {
        "mean(pR-pL) [current]": e.mean(),
        "median(pR-pL)": float(np.median(e)),
        "trim20 mean(pR-pL)": float(trim_mean(e, 0.2)),
        "trim10 mean(pR-pL)": float(trim_mean(e, 0.1)),
        "centered mean(pR-pL)": float((e - fold_mean_e).mean()),
        "mean log(pR/pL)": float((np.log(p[:, 2]) - np.log(p[:, 0])).mean()),
        "CC share R - share L": float(share[2] - share[0]),
        "ACC pi_R - pi_L": float(acc[2] - acc[0]),
        "PACC pi_R - pi_L": float(pacc[2] - pacc[0]),
        "EM pi_R - pi_L": float(em[2] - em[0]),
        "naive-Bayes P(R)-P(L)": float(post[2] - post[0]),
    }


def analyse(cache: Path, results_json: Path) -> None:
    import json

    from scipy.stats import pearsonr

    from allsides_batch.config import OUTLET_MIN_ARTICLES
    from allsides_batch.metrics import outlet_agreement, spearman

    published = None
    if results_json.is_file():
        rows = json.loads(results_json.read_text()).get("rows", {})
        if "tfidf|source" in rows:
            published = [f["spearman"] for f in rows["tfidf|source"]["per_fold"]]
    rho = {name: [] for name in STATISTICS}
    pear = {name: [] for name in STATISTICS}
    n_outlets, mixes = [], []
    print("\nreproduction of the package's outlet Spearman (mean p_right − p_left, outlets with >= "
          f"{OUTLET_MIN_ARTICLES} test articles):")
    print("fold | fit's metrics.json | outlet_agreement on cached probs | this script | docs/results.json tfidf")
    for f in range(FOLDS):
        z = np.load(cache / f"fold{f}.npz")
        probs, labels, sources = z["test_probs"], z["test_labels"], z["test_sources"].tolist()
        val_probs, val_labels = z["val_probs"], z["val_labels"]
        train_prior = np.bincount(z["rest_labels"], minlength=3) / len(z["rest_labels"])
        pred = probs.argmax(axis=1)
        val_pred = val_probs.argmax(axis=1)
        # the inner validation confusion (first fit, before the refit): rows true, columns predicted
        m_acc = np.stack([np.bincount(val_pred[val_labels == i], minlength=3) / max((val_labels == i).sum(), 1)
                          for i in range(3)])
        m_pacc = np.stack([val_probs[val_labels == i].mean(axis=0) for i in range(3)])
        fold_mean_e = float((probs[:, 2] - probs[:, 0]).mean())
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(sources):
            groups.setdefault(s, []).append(i)
        stats = {name: [] for name in STATISTICS}
        rating = []
        for rows_ in groups.values():
            if len(rows_) < OUTLET_MIN_ARTICLES:
                continue
            idx = np.asarray(rows_)
            rating.append(int(np.bincount(labels[idx], minlength=3).argmax()))
            for name, value in outlet_statistics(probs[idx], pred[idx], m_acc, m_pacc, train_prior,
                                                 fold_mean_e).items():
                stats[name].append(value)
        rating = np.asarray(rating)
        n_outlets.append(len(rating))
        mixes.append(np.bincount(rating, minlength=3).tolist())
        for name in STATISTICS:
            rho[name].append(spearman(stats[name], rating))
            x = np.asarray(stats[name])
            pear[name].append(float(pearsonr(x, rating).statistic) if np.ptp(x) > 0 else float("nan"))
        pkg = outlet_agreement(sources, labels, probs, min_articles=OUTLET_MIN_ARTICLES)["spearman"]
        pub = f"{published[f]:.6f}" if published else "n/a"
        print(f"{f} | {float(z['package_spearman']):.6f} | {pkg:.6f} | {rho['mean(pR-pL) [current]'][f]:.6f} | {pub}")
        print(f"     inner-val confusion P(pred|true) rows L/C/R: {np.round(m_acc, 3).tolist()}")

    def ms(v):
        v = np.asarray(v, dtype=float)
        v = v[~np.isnan(v)]
        return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"

    base = np.asarray(rho["mean(pR-pL) [current]"])
    print(f"\noutlets per fold (>= {OUTLET_MIN_ARTICLES} test articles): {n_outlets}; "
          f"their ratings [left, center, right] per fold: {mixes}")
    print("\n| statistic | Spearman mean ± sd | per fold | paired diff vs current (mean ± sd) | Pearson mean ± sd |")
    print("| --- | --- | --- | --- | --- |")
    for name in STATISTICS:
        r = np.asarray(rho[name])
        print(f"| {name} | {ms(r)} | {' '.join(f'{v:.3f}' for v in r)} | {ms(r - base)} | {ms(pear[name])} |")
    print(f"\nn outlets per fold: {' '.join(map(str, n_outlets))}")
    sd_base = base.std(ddof=1)
    print("\nverdict:")
    beats_sd = [n for n in STATISTICS if np.mean(rho[n]) - base.mean() > sd_base]
    diffs = {n: np.asarray(rho[n]) - base for n in STATISTICS if n != "mean(pR-pL) [current]"}
    beats_paired = [n for n, d in diffs.items() if d.mean() > 0 and d.mean() > d.std(ddof=1)]
    print(f"- fold-to-fold sd of the current statistic's Spearman: {sd_base:.3f}. Statistics whose mean Spearman "
          f"beats the current one ({base.mean():.3f}) by more than that: {beats_sd or 'none'}"
          + ("" if beats_sd else " — on this criterion the table ranks nothing."))
    print(f"- paired per-fold difference larger than its own sd (positive): {beats_paired or 'none'}")
    print("- 'centered mean(pR-pL)' subtracts one constant per fold from every outlet's mean: it cannot change a "
          "rank order within a fold, so its Spearman equals the current one's by construction.")
    for name, text in STATISTICS.items():
        print(f"  {name}: {text}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED_DATA))
    ap.add_argument("--cache", default=str(CACHE))
    ap.add_argument("--refresh", action="store_true", help="refit every fold, overwriting the cache")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    t0 = time.perf_counter()
    fit_folds(args.data, Path(args.cache), args.refresh)
    print(f"step 1 wall time: {time.perf_counter() - t0:.0f} s", flush=True)
    t1 = time.perf_counter()
    analyse(Path(args.cache), REPO / "docs" / "results.json")
    print(f"\nstep 2 wall time: {time.perf_counter() - t1:.1f} s")


if __name__ == "__main__":
    main()
