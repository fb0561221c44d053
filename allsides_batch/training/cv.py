"""Outlet-grouped, label-stratified K-fold cross-validation of a training recipe.

Each fold's outlets are held out entirely: the model trains on the other folds (with an inner
outlet-grouped validation split for epoch selection and the temperature) and is measured on
outlets it has never seen, which is what a nightly scorer meets. Per fold and mean ± sd:
macro-F1, accuracy, ECE (calibrated and not) and outlet-level Spearman. Written as cv.json and cv.md.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from ..config import TrainConfig
from ..errors import UserError
from ..storage.io import write_json
from .data import LabelledData, check_fold_count, load_labelled, make_split, outlet_folds, split_random

log = logging.getLogger(__name__)

METRICS = ("macro_f1", "accuracy", "ece", "ece_uncalibrated", "spearman", "outlet_accuracy")


@dataclass
class CVResult:
    folds: list[dict]
    summary: dict  # metric -> {"mean": float, "sd": float}
    output_dir: str | None


def random_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Label-stratified random folds (outlets shared across folds): the random-split comparison."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    for lab in np.unique(labels):
        rows = np.flatnonzero(labels == lab)
        rng.shuffle(rows)
        folds[rows] = np.arange(len(rows)) % k
    return folds


def fold_metrics(fold: int, metrics: dict, n_train: int, test: LabelledData, seconds: float) -> dict:
    """The numbers cv reports for one fold, from fit()'s metrics."""
    t, raw = metrics["test"], metrics["test_uncalibrated"]
    cal = metrics.get("calibration") or {}
    members = {m: {"macro_f1": r["test"]["macro_f1"], "accuracy": r["test"]["accuracy"], "ece": r["test"]["ece"],
                   "spearman": r["test"]["outlets"]["spearman"]}
               for m, r in (metrics.get("members") or {}).items()}
    before = metrics.get("test_before_refit")
    if before:  # the linear model before its refit on training + validation: the refit's effect, same fold
        members["before refit"] = {"macro_f1": before["macro_f1"], "accuracy": before["accuracy"],
                                   "ece": before["ece"], "spearman": before["outlets"]["spearman"]}
    return {"members": members, "ensemble_weights": metrics.get("ensemble_weights"), "fold": fold,
            "n_train": n_train, "n_test": len(test), "test_outlets": len(set(test.sources)),
            "macro_f1": t["macro_f1"], "accuracy": t["accuracy"], "ece": t["ece"], "ece_uncalibrated": raw["ece"],
            "nll": t["log_loss"], "nll_uncalibrated": raw["log_loss"], "spearman": t["outlets"]["spearman"],
            "outlet_accuracy": t["outlets"]["outlet_accuracy"], "temperature": cal.get("temperature", 1.0),
            "best_epoch": metrics["best_epoch"], "per_class_f1": {k: v["f1"] for k, v in t["per_class"].items()},
            "seconds": seconds}


def summarise(folds: list[dict]) -> dict:
    """mean and sample sd per metric over folds (NaN folds, e.g. Spearman with one outlet, skipped)."""
    out = {}
    for name in METRICS:
        values = np.array([f[name] for f in folds], dtype=np.float64)
        values = values[~np.isnan(values)]
        out[name] = {"mean": float(values.mean()) if len(values) else float("nan"),
                     "sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan"), "n": int(len(values))}
    return out


def inner_split(cfg: TrainConfig, rest: LabelledData, grouping: str) -> tuple[np.ndarray, np.ndarray]:
    """A fold's training and validation rows within `rest` (every article outside the held-out fold)."""
    if grouping == "outlet":
        return make_split(rest, cfg.split, cfg.val_fraction, cfg.seed, cfg.group_by)
    return split_random(rest.labels, cfg.val_fraction, cfg.seed)


def check_cv(cfg: TrainConfig, folds: int, grouping: str) -> None:
    """What cross_validate refuses, before any data is read: an unknown grouping, fewer than 2 folds, and a
    column split (cv makes its own folds)."""
    if grouping not in ("outlet", "random"):
        raise UserError(f"--grouping must be outlet or random, got {grouping!r}")
    check_fold_count(folds)
    if cfg.split.startswith("column:"):
        raise UserError("cv makes its own folds: use --split outlet or random for the inner validation split")


def fold_assignment(cfg: TrainConfig, data: LabelledData, folds: int, grouping: str) -> np.ndarray:
    """The fold (0..folds-1) of every article: whole outlets (or domains, cfg.group_by) per fold for
    grouping 'outlet', label-stratified random folds for 'random' (check_cv's groupings)."""
    if grouping == "outlet":
        assign = outlet_folds(data.groups(cfg.group_by), data.labels, folds, cfg.seed)
    else:
        assign = random_folds(data.labels, folds, cfg.seed)
    empty = [f for f in range(folds) if not (assign == f).any()]
    if empty:
        raise UserError(f"fold {empty[0]} is empty: use fewer --folds")
    return assign


def split_fold(data: LabelledData, assign: np.ndarray, fold: int) -> tuple[LabelledData, LabelledData]:
    """(every article outside `fold`, the held-out fold's articles) for fold_assignment's `assign`."""
    return data.subset(np.flatnonzero(assign != fold)), data.subset(np.flatnonzero(assign == fold))


def _run_fold(cfg: TrainConfig, fold: int, rest: LabelledData, test: LabelledData, grouping: str) -> dict:
    from .train import fit

    t0 = time.perf_counter()
    train_idx, val_idx = inner_split(cfg, rest, grouping)
    log.info(f"fold {fold + 1}: {len(test)} test articles from {len(set(test.sources))} outlets ({cfg.kind} model)")
    fitted = fit(cfg, rest.subset(train_idx), rest.subset(val_idx), test)
    return fold_metrics(fold, fitted.metrics, len(train_idx), test, time.perf_counter() - t0)


def cross_validate(cfg: TrainConfig, folds: int = 5, grouping: str = "outlet", output: str | None = None,
                   max_articles: int | None = None, data: LabelledData | None = None, jobs: int = 1) -> CVResult:
    """K-fold CV of the recipe `cfg` on cfg.data (or on already loaded `data`, prepared with the
    recipe's text preparation). grouping 'outlet' holds out whole groups of cfg.group_by (outlets or
    domains); 'random' does not. `jobs` > 1 runs that many folds at once in worker processes (a linear
    model fits on one core; a transformer already uses them all)."""
    from .train import text_prep

    check_cv(cfg, folds, grouping)
    if data is None:
        if not cfg.data:
            raise UserError("--data is required: labelled Parquet file(s), a directory, a glob or hf:NAME")
        data = load_labelled(cfg.data, cfg.columns, prep=text_prep(cfg))
    if max_articles is not None and len(data) > max_articles:
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(data), size=max_articles, replace=False))
        data = data.subset(keep)
    assign = fold_assignment(cfg, data, folds, grouping)
    parts = [(cfg, f, *split_fold(data, assign, f), grouping) for f in range(folds)]
    if jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        from ..runtime.shutdown import ignore_interrupt

        with ProcessPoolExecutor(min(jobs, folds), mp_context=mp.get_context("spawn"),
                                 initializer=ignore_interrupt) as pool:
            results = list(pool.map(_run_fold, *zip(*parts)))
    else:
        results = [_run_fold(*part) for part in parts]
    summary = summarise(results)
    if output:
        write_cv(output, cfg, folds, grouping, results, summary)
    return CVResult(folds=results, summary=summary, output_dir=output)


def _fmt(stat: dict) -> str:
    if math.isnan(stat["mean"]):
        return "n/a"
    return f"{stat['mean']:.3f} ± {stat['sd']:.3f}" if not math.isnan(stat["sd"]) else f"{stat['mean']:.3f}"


def markdown_table(folds: list[dict], summary: dict) -> str:
    """Per-fold rows and a mean ± sd row. Metrics with 3 decimals, T with 2 (a NaN fold shows `nan`). The
    last row is summarise()'s mean ± sample sd (ddof 1) over the folds with a value: the mean alone when one
    fold has a value, `n/a` when none (e.g. Spearman when too few test outlets have enough articles)."""
    lines = ["| fold | test articles / outlets | macro-F1 | accuracy | ECE (uncalibrated) | Spearman | T |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for f in folds:
        lines.append(f"| {f['fold']} | {f['n_test']} / {f['test_outlets']} | {f['macro_f1']:.3f} | {f['accuracy']:.3f} "
                     f"| {f['ece']:.3f} ({f['ece_uncalibrated']:.3f}) | {f['spearman']:.3f} | {f['temperature']:.2f} |")
    s = summary
    lines.append(f"| mean ± sd | | {_fmt(s['macro_f1'])} | {_fmt(s['accuracy'])} | {_fmt(s['ece'])} "
                 f"({_fmt(s['ece_uncalibrated'])}) | {_fmt(s['spearman'])} | |")
    return "\n".join(lines) + "\n"


def write_cv(output: str, cfg: TrainConfig, folds: int, grouping: str, results: list[dict], summary: dict) -> None:
    os.makedirs(output, exist_ok=True)
    write_json(os.path.join(output, "cv.json"), {"folds": folds, "grouping": grouping,
                                                "config": dataclasses.asdict(cfg),
                                                "per_fold": results, "summary": summary})
    with open(os.path.join(output, "cv.md"), "w") as fh:
        fh.write(f"# {folds}-fold {grouping}-grouped cross-validation\n\n")
        fh.write(markdown_table(results, summary))
