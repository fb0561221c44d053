"""Training, staged top to bottom: data → split → fit (linear.py, transformer.py or ensemble.py, by
`kind`) → save model, recipe, metrics and model card.

train_model reads and splits the data, then `fit` does the rest on given train/validation/test sets
(cross-validation calls `fit` once per fold).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass

import numpy as np

from .. import LABELS
from ..config import TrainConfig
from ..errors import UserError
from ..models.files import (
    CONFIG_FILE,
    ENSEMBLE_MEMBERS,
    LINEAR_WEIGHTS_FILE,
    METRICS_FILE,
    MODEL_CARD_FILE,
    MODEL_KIND_FILE,
    OOF_SCORES_FILE,
    OUTLET_RULE_FILE,
    TRAINING_OUTLETS_FILE,
    TRAINING_RECIPE_FILE,
    TRANSFORMER_WEIGHTS_FILE,
)
from ..models.hub import save_model
from ..models.identity import write_model_kind
from ..outlets import training_outlets
from ..runtime.stall import TRAIN_STALL_ENV, stall_point
from ..schema import BIAS_SCORE
from ..storage.io import write_json
from ..text.masking import MASK_VERSION
from ..text.prep import TextPrep
from .data import LabelledData, load_labelled, make_split
from .fitted import OUTLET_MIN_ARTICLES, Fitted, limit_rows, metrics_from_article_logits, report_from_probs
from .model_card import git_commit, model_card, package_versions
from .transformer import Encoded, fit_transformer, pad_batch, predict_logits, set_seed

__all__ = ["MODEL_FILES", "OUTLET_MIN_ARTICLES", "Encoded", "Fitted", "TrainResult", "fit", "fit_transformer",
           "limit_rows", "metrics_from_article_logits", "pad_batch", "predict_logits", "report_from_probs",
           "save_fitted", "set_seed", "text_prep", "train_model"]

log = logging.getLogger(__name__)

MODEL_FILES = (TRANSFORMER_WEIGHTS_FILE, CONFIG_FILE, TRAINING_RECIPE_FILE, MODEL_KIND_FILE, LINEAR_WEIGHTS_FILE)
# test seam: "staged" pauses once the new model is complete beside --output, "fold" in an out-of-fold fit
STALL_ENV = TRAIN_STALL_ENV

@dataclass
class TrainResult:
    output_dir: str
    metrics: dict


def _check_output(cfg: TrainConfig) -> None:
    if not cfg.output:
        raise UserError("--output is required: the directory to write the trained model to")
    if os.path.exists(cfg.output):
        if not os.path.isdir(cfg.output):
            raise UserError(f"--output {cfg.output!r} exists and is not a directory")
        holds_model = any(os.path.exists(os.path.join(cfg.output, f)) for f in MODEL_FILES)
        if holds_model and not cfg.overwrite:
            raise UserError(f"--output {cfg.output!r} already holds a model; pass --overwrite to replace it "
                            "or choose another directory")


def text_prep(cfg: TrainConfig) -> TextPrep:
    """The text preparation a recipe trains (and its model will score) with."""
    return TextPrep(mask_outlet=cfg.mask_outlet, mask_version=MASK_VERSION if cfg.mask_outlet else 0)


def train_model(cfg: TrainConfig) -> TrainResult:
    """Train a model of cfg.kind on cfg.data and write a complete model directory to cfg.output."""
    # ---- 1. inputs
    _check_output(cfg)
    unused = cfg.unused_options()
    if unused:
        log.warning(f"a {cfg.kind} model does not read {', '.join('--' + n.replace('_', '-') for n in unused)}: "
                    "ignored (see train --help and --kind)")
    if not cfg.data:
        raise UserError("--data is required: labelled Parquet file(s), a directory, a glob or hf:NAME")
    prep = text_prep(cfg)
    split_column = cfg.split.split(":", 1)[1] if cfg.split.startswith("column:") else None
    data = load_labelled(cfg.data, cfg.columns, split_column=split_column, prep=prep)
    train_idx, val_idx = make_split(data, cfg.split, cfg.val_fraction, cfg.seed, cfg.group_by)
    train_data, val_data = data.subset(train_idx), data.subset(val_idx)
    test_data = load_labelled(cfg.test, cfg.columns, prep=prep) if cfg.test else None
    fitted = fit(cfg, train_data, val_data, test_data)
    if cfg.kind != "ensemble":  # an ensemble's limit applies to its transformer half only
        train_data = limit_rows(train_data, cfg.max_train_samples, cfg.seed)
    val_data = limit_rows(val_data, cfg.max_eval_samples, cfg.seed)
    overlap = set(train_data.sources) & set(val_data.sources)
    recipe = {
        "config": cfg.to_dict(), "max_length_used": fitted.max_length, "text_preparation": prep.__dict__,
        "data_files": data.files, "test_files": test_data.files if test_data else [],
        "split_sizes": {"train": len(train_data), "validation": len(val_data),
                        "test": len(test_data) if test_data else 0,
                        "train_outlets": len(set(train_data.sources)), "validation_outlets": len(set(val_data.sources)),
                        "outlets_in_both": len(overlap)},
        "rows_skipped": data.dropped, "device": str(fitted.device),
        "precision": str(fitted.dtype).replace("torch.", ""), "steps": fitted.steps,
        "package_versions": package_versions(), "git_commit": git_commit(),
    }
    refit = bool(fitted.metrics.get("refit_on_validation"))
    fitted_rows = [train_data, val_data] if refit else [train_data]
    outlets = training_outlets([s for d in fitted_rows for s in d.sources], _urls(fitted_rows),
                               val_data.sources, _urls([val_data]), refit)
    rule = fit_outlet_rule(cfg, data.subset(np.concatenate([train_idx, val_idx]) if refit else train_idx),
                           fitted.calibration)
    _write_output(cfg, fitted, prep, recipe, outlets, rule)
    return TrainResult(output_dir=cfg.output, metrics=fitted.metrics)


def _urls(parts: list[LabelledData]) -> list[str | None] | None:
    if any(d.urls is None for d in parts):
        return None
    return [u for d in parts for u in d.urls]


def fit(cfg: TrainConfig, train_data: LabelledData, val_data: LabelledData,
        test_data: LabelledData | None = None) -> Fitted:
    """Train a model of cfg.kind on train_data, select and calibrate it on val_data and report test_data
    (if given). Texts must already be prepared with text_prep(cfg). max_train_samples limits an
    ensemble's transformer half only: the linear half reads every training article in seconds."""
    val_data = limit_rows(val_data, cfg.max_eval_samples, cfg.seed)
    if cfg.kind != "ensemble":
        train_data = limit_rows(train_data, cfg.max_train_samples, cfg.seed)
    overlap = set(train_data.sources) & set(val_data.sources)
    log.info(f"data: train {len(train_data)} articles / {len(set(train_data.sources))} outlets, validation "
             f"{len(val_data)} / {len(set(val_data.sources))} ({cfg.split} split by {cfg.group_by}; {len(overlap)} "
             "outlet(s) in both)")
    if cfg.kind == "linear":
        from .linear import fit_linear_model

        return fit_linear_model(cfg, train_data, val_data, test_data)
    if cfg.kind == "ensemble":
        from .ensemble import fit_ensemble

        return fit_ensemble(cfg, train_data, val_data, test_data)
    return fit_transformer(cfg, train_data, val_data, test_data)


def save_fitted(fitted: Fitted, out_dir: str, prep: TextPrep) -> None:
    """The files `score` loads: weights (safetensors only) and config or vectorizer, the model kind, the
    text preparation and the temperature. An ensemble holds one complete model per member subdirectory."""
    if fitted.kind == "ensemble":
        for member in ENSEMBLE_MEMBERS:
            part = fitted.model[member]
            sub = os.path.join(out_dir, member)
            os.makedirs(sub)
            save_fitted(part, sub, prep)
            write_json(os.path.join(sub, TRAINING_RECIPE_FILE), {"max_length_used": part.max_length,
                                                                   "member_of": "ensemble"})
        write_model_kind(out_dir, "ensemble", weights=fitted.ensemble_weights, members=list(ENSEMBLE_MEMBERS))
    elif fitted.kind == "linear":
        fitted.model.save(out_dir)
        write_model_kind(out_dir, "linear")
    else:
        save_model(fitted.model, fitted.tokenizer, out_dir)
        write_model_kind(out_dir, "transformer")
    prep.save(out_dir)
    if fitted.calibration is not None:
        fitted.calibration.save(out_dir)


def fit_outlet_rule(cfg: TrainConfig, data: LabelledData, calibration) -> dict | None:
    """For kind linear with linear_outlet_folds: score `data` (the rows the saved model was fitted on) out of
    fold and fit the outlet rule on those outlets (training/outlet_rule.py). Returns {"rule": JSON,
    "oof": Parquet table}, or None (another kind, folds 0, or too few outlets: a warning says why)."""
    import time

    import pyarrow as pa

    from .outlet_rule import fit_rule, oof_scores, outlets_of, rule_report

    if cfg.kind != "linear" or not cfg.linear_outlet_folds:
        return None
    started = time.perf_counter()
    folds = cfg.linear_outlet_folds
    jobs = min(folds, os.cpu_count() or 1) if len(data) >= 5000 else 1  # small data: no process start-up
    try:
        scores, assign = oof_scores(cfg, data, folds, jobs=jobs,
                                    temperature=calibration.temperature if calibration is not None else 1.0)
    except UserError as exc:
        log.warning(f"no outlet rule fitted ({exc}); aggregate will label outlets with the fixed ±T rule")
        return None
    outlets = outlets_of(data.sources, data.labels, scores)
    rule = fit_rule(outlets, OUTLET_MIN_ARTICLES)
    seconds = time.perf_counter() - started
    report = rule_report(outlets, rule)
    log.info(f"outlet rule: thresholds {rule.thresholds[0]:+.3f} / {rule.thresholds[1]:+.3f} on {report['outlets']} "
             f"outlets with >= {OUTLET_MIN_ARTICLES} articles (out-of-fold outlet accuracy "
             f"{report['accuracy_fitted']:.3f}, in-sample for the thresholds; ±1/3 {report['accuracy_fixed']:.3f}; "
             f"{seconds:.0f} s)")
    oof = pa.table({"id": pa.array(data.ids, pa.string()), "source": pa.array(data.sources, pa.string()),
                    "url": pa.array(data.urls if data.urls is not None else [None] * len(data), pa.string()),
                    "label": pa.array([LABELS[int(y)] for y in data.labels], pa.string()),
                    BIAS_SCORE: pa.array(scores, pa.float64()), "fold": pa.array(assign, pa.int32())})
    meta = {"method": "thresholds on out-of-fold outlet means (most outlets right), split-conformal label sets",
            "folds": folds, "group_by": cfg.group_by, "articles": len(data), "outlets": len(outlets.names),
            "fit_report": report, "seconds": round(seconds, 1)}
    return {"rule": {**rule.to_json(), **meta}, "oof": oof}


def _strongest_terms(fitted: Fitted) -> dict | None:
    """The linear model's (or an ensemble's linear half's) strongest terms each way, for the model card."""
    linear = fitted.model if fitted.kind == "linear" else (
        fitted.model["linear"].model if fitted.kind == "ensemble" else None)
    return linear.strongest_terms(20) if linear is not None else None


def _write_output(cfg: TrainConfig, fitted: Fitted, prep: TextPrep, recipe: dict, outlets: dict,
                  rule: dict | None = None) -> None:
    """Write everything to a sibling temporary directory, then move it into place: an interrupted run
    never leaves a half-written model where a good one was. With --overwrite the old model is renamed to
    `<output>.old-<pid>` before the new one moves in and deleted after, so a kill between the two renames
    leaves it there, whole."""
    final = os.path.abspath(cfg.output)
    tmp = f"{final}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        save_fitted(fitted, tmp, prep)
        write_json(os.path.join(tmp, TRAINING_RECIPE_FILE), recipe)
        write_json(os.path.join(tmp, METRICS_FILE), fitted.metrics)
        write_json(os.path.join(tmp, TRAINING_OUTLETS_FILE), outlets)
        if rule is not None:
            import pyarrow.parquet as pq

            write_json(os.path.join(tmp, OUTLET_RULE_FILE), rule["rule"])
            pq.write_table(rule["oof"], os.path.join(tmp, OOF_SCORES_FILE))
        with open(os.path.join(tmp, MODEL_CARD_FILE), "w") as fh:
            fh.write(model_card(cfg, recipe, fitted.metrics, _strongest_terms(fitted)))
        stall_point(STALL_ENV, "staged")
    except BaseException:
        # a full disk or Ctrl-C while staging: the half-written copy goes, --output is untouched
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = f"{final}.old-{os.getpid()}"
    if os.path.isdir(final):  # --overwrite: set the old model aside, move the new one in, then delete the old
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)

