"""The outlet rule: what turns an outlet's article scores into `outlet_label` and `label_set`, fitted on
outlets the model never saw.

The fixed rule (mean bias score below −1/3 left, above +1/3 right) suits a model whose scores fill the
range; this one's outlet means for unseen outlets sit near 0 (between about −0.3 and +0.3), so almost
every unseen outlet comes out "center". `train` therefore scores every training article out of fold (K
outlet-grouped folds: each article by a linear model of the same recipe that never saw its outlet), takes
each outlet's mean, and fits on those:

- thresholds (lo, hi): the pair of cut points on the outlet mean that labels the most outlets with at
  least `min_articles` articles correctly (exhaustive over all cut positions, O(outlets));
- a split-conformal label set: for an outlet of n articles and mean m, label y is in the set when
  dist(m, interval of y) / sqrt(tau2 + s2 / n) <= q. s2 is the pooled within-outlet variance of article
  scores (sampling noise, shrinking with n), tau2 the mean squared misplacement of the large outlets
  (the model's own error, which does not shrink), and q the conformal quantile of that normalised
  distance over every out-of-fold outlet, so a 3-article outlet gets a wider set than a 3,000-article one.
  The sorted calibration distances are saved, so `aggregate --set-level` can pick any level.

Saved as `outlet_rule.json` (no pickle), with the out-of-fold article scores (`oof_scores.parquet`) that
`report` draws the unseen-outlet picture from.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from .. import LABELS
from ..config import TrainConfig
from ..errors import UserError
from ..models.files import OOF_SCORES_FILE, OUTLET_RULE_FILE
from ..outlets import fixed_thresholds, label_of
from .data import LabelledData, outlet_folds

log = logging.getLogger(__name__)

# the names report.py and aggregate.py know these files by
RULE_FILE = OUTLET_RULE_FILE
OOF_FILE = OOF_SCORES_FILE
VERSION = 1
DEFAULT_SET_LEVEL = 0.9
SIZE_BINS = ((1, 4), (5, 19), (20, 99), (100, None))  # outlet article counts, for coverage by size


def size_bin(n: int) -> str:
    for lo, hi in SIZE_BINS:
        if n >= lo and (hi is None or n <= hi):
            return f"{lo}+" if hi is None else f"{lo}-{hi}"
    raise ValueError(n)


# -------------------------------------------------------------------------------------- out-of-fold

def _oof_fold(cfg: TrainConfig, fold: int, rest: LabelledData, held: LabelledData,
              temperature: float) -> tuple[int, np.ndarray]:
    from ..models.calibration import softmax
    from ..runtime.stall import TRAIN_STALL_ENV as STALL_ENV
    from ..runtime.stall import stall_point
    from .linear import fit_recipe

    stall_point(STALL_ENV, "fold")  # test seam: a fold under way (in a worker process when folds run in parallel)
    model, _ = fit_recipe(cfg, rest.texts, rest.labels, rest.sources)
    probs = softmax(model.logits(held.texts), temperature)
    return fold, (probs[:, 2] - probs[:, 0]).astype(np.float64)


def oof_scores(cfg: TrainConfig, data: LabelledData, folds: int, jobs: int = 1,
               temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(bias score, fold) of every article of `data`, each scored by a linear model of cfg's recipe fitted on
    the other folds (outlet-grouped by cfg.group_by, label-stratified: cv's folds), its logits divided by
    the saved model's `temperature` as the scorer does. `jobs` folds at once."""
    started = time.perf_counter()
    assign = outlet_folds(data.groups(cfg.group_by), data.labels, folds, cfg.seed)  # cv's outlet folds
    parts = [(cfg, f, data.subset(np.flatnonzero(assign != f)), data.subset(np.flatnonzero(assign == f)), temperature)
             for f in range(folds)]
    if jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        from ..runtime.shutdown import ignore_interrupt

        with ProcessPoolExecutor(min(jobs, folds), mp_context=mp.get_context("spawn"),
                                 initializer=ignore_interrupt) as pool:
            results = list(pool.map(_oof_fold, *zip(*parts)))
    else:
        results = [_oof_fold(*part) for part in parts]
    scores = np.empty(len(data), dtype=np.float64)
    for fold, values in results:
        scores[assign == fold] = values
    log.info(f"outlet rule: {len(data)} articles scored out of fold ({folds} folds by {cfg.group_by}, "
             f"{time.perf_counter() - started:.0f} s)")
    return scores, assign


# -------------------------------------------------------------------------------------------- outlets

@dataclass
class Outlets:
    """One entry per outlet: name, article count, mean and variance of its article scores, its label
    (the majority of its articles' labels)."""

    names: list[str]
    n: np.ndarray
    mean: np.ndarray
    var: np.ndarray   # sample variance (ddof 1); NaN for one article
    label: np.ndarray


def outlets_of(sources: list[str], labels: np.ndarray, scores: np.ndarray) -> Outlets:
    names, inverse = np.unique(np.asarray(sources, dtype=object).astype(str), return_inverse=True)
    n = np.bincount(inverse).astype(np.int64)
    total = np.bincount(inverse, weights=scores)
    mean = total / n
    sq = np.bincount(inverse, weights=(scores - mean[inverse]) ** 2)
    var = np.where(n > 1, sq / np.maximum(n - 1, 1), np.nan)
    counts = np.zeros((len(names), len(LABELS)), dtype=np.int64)
    np.add.at(counts, (inverse, np.asarray(labels, dtype=np.int64)), 1)
    return Outlets(names=names.tolist(), n=n, mean=mean, var=var, label=counts.argmax(axis=1))


# ---------------------------------------------------------------------------------------------- rules

FIXED = fixed_thresholds()  # aggregate's default ±T rule (outlets.py owns the label rule)


def fit_thresholds(mean: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    """The cut points lo <= hi that label the most outlets right (lo and hi at midpoints between adjacent
    outlet means; among equally good pairs, the one whose center band is widest)."""
    order = np.argsort(mean, kind="stable")
    m, y = np.asarray(mean, dtype=np.float64)[order], np.asarray(label)[order]
    k = len(m)
    if k == 0:
        raise UserError("no outlets to fit the outlet rule on")
    # cut position i: outlets [0, i) are left of it. prefix[c][i] = outlets of label c before position i
    prefix = np.zeros((len(LABELS), k + 1), dtype=np.int64)
    for c in range(len(LABELS)):
        prefix[c, 1:] = np.cumsum(y == c)
    best, best_pair, best_width = -1, (0, k), -1.0
    # accuracy(i, j) = left[i] + center[j] - center[i] + right[k] - right[j], for i <= j
    gain_j = prefix[1] - prefix[2]                      # center[j] - right[j]
    for i in range(k + 1):
        tail = gain_j[i:]
        score_i = prefix[0, i] - prefix[1, i] + prefix[2, k] + tail.max()
        if score_i < best:
            continue
        for j in np.flatnonzero(tail == tail.max()) + i:
            width = _cut(m, j) - _cut(m, i)
            if score_i > best or width > best_width:
                best, best_pair, best_width = score_i, (i, int(j)), width
    return _cut(m, best_pair[0]), _cut(m, best_pair[1])


def _cut(m: np.ndarray, i: int) -> float:
    """The cut point before sorted position i: the midpoint of its neighbours, or just past the ends."""
    if i <= 0:
        return float(m[0]) - 1e-6 if len(m) else -1.0
    if i >= len(m):
        return float(m[-1]) + 1e-6
    return float((m[i - 1] + m[i]) / 2)


def distance(mean: np.ndarray, y: int, thresholds: tuple[float, float]) -> np.ndarray:
    """How far an outlet mean lies outside label y's interval under `thresholds` (0 inside)."""
    lo, hi = thresholds
    mean = np.asarray(mean, dtype=np.float64)
    if y == 0:
        return np.maximum(mean - lo, 0.0)
    if y == 2:
        return np.maximum(hi - mean, 0.0)
    return np.maximum(lo - mean, 0.0) + np.maximum(mean - hi, 0.0)


def distances(mean: np.ndarray, thresholds: tuple[float, float]) -> np.ndarray:
    """(N, labels): distance(mean, y, thresholds) for every label y."""
    return np.stack([distance(mean, y, thresholds) for y in range(len(LABELS))], axis=1)


@dataclass
class OutletRule:
    thresholds: tuple[float, float]
    tau2: float
    within_var: float
    calibration: list[float]  # sorted normalised distances of the calibration outlets to their own label
    min_articles: int

    def scale(self, n: np.ndarray) -> np.ndarray:
        return np.sqrt(self.tau2 + self.within_var / np.maximum(np.asarray(n, dtype=np.float64), 1.0))

    def quantile(self, level: float) -> float:
        """Split-conformal quantile: the ceil((N + 1) level)-th smallest calibration distance (inf past N)."""
        if not 0.0 < level < 1.0:
            raise UserError(f"--set-level must be in (0, 1), got {level}")
        rank = math.ceil((len(self.calibration) + 1) * level)
        return math.inf if rank > len(self.calibration) else float(self.calibration[rank - 1])

    def labels(self, mean: np.ndarray) -> np.ndarray:
        return label_of(mean, self.thresholds)

    def sets(self, mean: np.ndarray, n: np.ndarray, level: float = DEFAULT_SET_LEVEL) -> list[list[str]]:
        inside = distances(mean, self.thresholds) / self.scale(n)[:, None] <= self.quantile(level)
        return [[LABELS[y] for y in range(len(LABELS)) if row[y]] for row in inside]

    def to_json(self) -> dict:
        return {"version": VERSION, "thresholds": list(self.thresholds), "tau2": self.tau2,
                "within_var": self.within_var, "min_articles": self.min_articles,
                "calibration_distances": self.calibration}

    @classmethod
    def from_json(cls, raw: dict) -> OutletRule:
        lo, hi = (float(v) for v in raw["thresholds"])
        if not lo <= hi:
            raise ValueError(f"thresholds {lo} > {hi}")
        return cls(thresholds=(lo, hi), tau2=float(raw["tau2"]), within_var=float(raw["within_var"]),
                   calibration=sorted(float(v) for v in raw["calibration_distances"]),
                   min_articles=int(raw["min_articles"]))


def read_outlet_rule(model_dir: str | None) -> OutletRule | None:
    """The model directory's fitted rule, or None where it has none (another kind, or a model trained before
    the rule existed). A damaged file is an error that says what to do."""
    import os

    from ..storage.io import read_json

    path = os.path.join(model_dir or "", RULE_FILE)
    if not model_dir or not os.path.isfile(path):
        return None
    try:
        return OutletRule.from_json(read_json(path))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} is damaged ({type(exc).__name__}: {exc}); retrain the model, or pass "
                        "--label-rule fixed") from exc


def fit_rule(outlets: Outlets, min_articles: int) -> OutletRule:
    """Thresholds on the outlets with at least `min_articles` articles (all outlets when fewer than 10
    such), the conformal scale and calibration distances on every outlet."""
    big = outlets.n >= min_articles
    if big.sum() < 10:
        big = np.ones_like(big)
    thresholds = fit_thresholds(outlets.mean[big], outlets.label[big])
    d_true = distances(outlets.mean, thresholds)[np.arange(len(outlets.names)), outlets.label]
    several = outlets.n > 1
    within = float(np.sum((outlets.n[several] - 1) * outlets.var[several]) / max(np.sum(outlets.n[several] - 1), 1))
    tau2 = float(np.mean(d_true[big] ** 2))
    rule = OutletRule(thresholds=thresholds, tau2=max(tau2, 1e-6), within_var=within, calibration=[],
                      min_articles=min_articles)
    rule.calibration = sorted((d_true / rule.scale(outlets.n)).tolist())
    return rule


def rule_report(outlets: Outlets, rule: OutletRule, level: float = DEFAULT_SET_LEVEL,
                sets: list[list[str]] | None = None) -> dict:
    """Outlet accuracy of the fitted and fixed rules (outlets with >= min_articles), set coverage and mean
    size overall and by size bin, on `outlets` (out-of-fold outlets the rule was not fitted on, to measure).
    `sets`: the outlets' label sets at `level`, where the caller has them already."""
    big = outlets.n >= rule.min_articles
    sets = rule.sets(outlets.mean, outlets.n, level) if sets is None else sets
    covered = np.array([LABELS[int(y)] in s for y, s in zip(outlets.label, sets)])
    size = np.array([len(s) for s in sets], dtype=np.float64)
    bins = {}
    for lo, hi in SIZE_BINS:
        mask = (outlets.n >= lo) & ((outlets.n <= hi) if hi is not None else True)
        bins[size_bin(lo)] = {"outlets": int(mask.sum()),
                              "coverage": float(covered[mask].mean()) if mask.any() else float("nan"),
                              "set_size": float(size[mask].mean()) if mask.any() else float("nan")}
    def accuracy(labels: np.ndarray) -> float:  # NaN with no outlet large enough
        return float((labels == outlets.label[big]).mean()) if big.any() else float("nan")

    return {"outlets": int(big.sum()),
            "accuracy_fitted": accuracy(rule.labels(outlets.mean[big])),
            "accuracy_fixed": accuracy(label_of(outlets.mean[big], FIXED)),
            "coverage": float(covered.mean()), "set_size": float(size.mean()), "level": level,
            "all_outlets": len(outlets.names), "by_size": bins}
