"""Fine-tuning, staged top to bottom: data → split → model → tokens → loop (evaluate every epoch,
keep the best, stop early) → calibrate → save model, recipe, metrics and model card.

train_model reads and splits the data, then `fit` does the rest on given train/validation/test
sets (cross-validation calls `fit` once per fold). The outlet-robust options (masking, adversary,
class balancing, several windows per article, temperature scaling) live in masking.py, robust.py,
windows.py and calibration.py; here they are only wired in.

Plain PyTorch rather than the Hugging Face Trainer: dynamic padding, one pre-tokenization pass with
character cuts, length-sorted evaluation. bench/train_bench.py compares the two on the same recipe.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from tqdm.auto import tqdm

from . import LABELS
from .calibration import Calibration, article_probs, fit_temperature
from .config import TrainConfig
from .data import LabelledData, load_labelled, make_split
from .errors import UserError
from .io import write_json
from .masking import MASK_VERSION
from .metrics import classification_report, outlet_agreement
from .model import (
    ENSEMBLE_MEMBERS,
    MODEL_KIND_FILE,
    load_base_model,
    load_tokenizer,
    resolve_device,
    resolve_precision,
    save_model,
    write_model_kind,
)
from .model_card import git_commit, model_card, package_versions
from .robust import OutletAdversary, balanced_order, class_weights, outlet_index, sentence_features
from .text import TextPrep
from .windows import encode_windows

MODEL_FILES = ("model.safetensors", "config.json", "training_recipe.json", MODEL_KIND_FILE, "linear.safetensors")
# Outlet-level Spearman counts outlets with at least this many articles (as evaluate's --min-articles):
# the mean of fewer articles is mostly noise.
OUTLET_MIN_ARTICLES = 20


@dataclass
class Encoded:
    """Token ids (unpadded, special tokens included), one row per window, with the articles' labels
    and outlets. owner[m] is the article of window m and weight[m] its content tokens; without them
    every row is one article."""

    ids: list[list[int]]
    labels: np.ndarray            # (N,) per article
    sources: list[str]            # (N,) per article
    owner: np.ndarray | None = None   # (M,) article of each window
    weight: np.ndarray | None = None  # (M,) content tokens of each window

    def __post_init__(self) -> None:
        if self.owner is None:
            self.owner = np.arange(len(self.ids), dtype=np.int64)
        if self.weight is None:
            self.weight = np.ones(len(self.ids), dtype=np.float64)

    def __len__(self) -> int:
        """Training examples (windows)."""
        return len(self.ids)


@dataclass
class TrainResult:
    output_dir: str
    metrics: dict


@dataclass
class Fitted:
    """A trained model in memory with its metrics, as `fit` returns it."""

    model: object                 # a transformers classifier, a LinearModel, or {"transformer": Fitted, "linear": Fitted}
    tokenizer: object             # None for the linear kind
    metrics: dict
    calibration: Calibration | None
    max_length: int               # 0 for the linear kind (it reads the whole text)
    steps: int
    device: torch.device
    dtype: torch.dtype
    val_probs: np.ndarray | None = None   # (N_val, 3) article probabilities as the scorer would give them
    test_probs: np.ndarray | None = None  # (N_test, 3)
    kind: str = "transformer"
    ensemble_weights: dict | None = None  # ensemble: {"transformer": w, "linear": w}


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (CPU and every accelerator)."""
    transformers.set_seed(seed)


def pad_batch(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic padding: pad to the longest row of this batch, not to max_length.
    Returns input_ids (B, T) and attention_mask (B, T)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def _autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)


@torch.no_grad()
def predict_logits(model, rows: list[list[int]], batch_size: int, pad_id: int, device: torch.device,
                   dtype: torch.dtype) -> np.ndarray:
    """Logits (N, C) in input order, float32; rows are batched by length so padding is small."""
    model.eval()
    order = np.argsort([len(r) for r in rows], kind="stable")
    out = np.zeros((len(rows), model.config.num_labels), dtype=np.float32)
    for start in range(0, len(rows), batch_size):
        idx = order[start:start + batch_size]
        ids, mask = pad_batch([rows[i] for i in idx], pad_id)
        with _autocast(device, dtype):
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, C)
        out[idx] = logits.float().cpu().numpy()
    return out


def report_from_logits(enc: Encoded, logits: np.ndarray, temperature: float = 1.0) -> dict:
    """Article-level metrics from window logits (M, C): windows averaged as the scorer's chunk mode."""
    probs = article_probs(logits, temperature, enc.owner, enc.weight, len(enc.labels))
    return report_from_probs(enc.labels, enc.sources, probs, temperature)


def report_from_probs(labels: np.ndarray, sources: list[str], probs: np.ndarray, temperature: float = 1.0) -> dict:
    """Article-level metrics and outlet-level agreement (outlets with at least OUTLET_MIN_ARTICLES)."""
    report = classification_report(labels, probs)
    report["val_loss"] = report["log_loss"]
    report["outlets"] = outlet_agreement(sources, labels, probs, min_articles=OUTLET_MIN_ARTICLES)
    report["temperature"] = temperature
    return report


def metrics_from_article_logits(cfg: TrainConfig, val_data: LabelledData, val_logits: np.ndarray,
                                test_data: LabelledData | None, test_logits: np.ndarray | None,
                                train_loss: float, seconds: float) -> tuple[dict, Calibration | None, np.ndarray,
                                                                           np.ndarray | None]:
    """metrics.json for a model fitted in one pass (linear, ensemble): one "epoch" row, the temperature
    (with --calibrate) fitted on validation, validation and test reports. Logits are per article (N, C).
    Returns (metrics, calibration, validation probabilities, test probabilities)."""
    calibration = fit_temperature(val_logits, val_data.labels) if cfg.calibrate else None
    temperature = calibration.temperature if calibration else 1.0
    val_probs = article_probs(val_logits, temperature)
    report = report_from_probs(val_data.labels, val_data.sources, val_probs, temperature)
    row = {"epoch": 1, "step": 0, "train_loss": float(train_loss), "val_loss": report["val_loss"],
           "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
           "per_class_f1": {k: v["f1"] for k, v in report["per_class"].items()}, "ece": report["ece"],
           "outlet_spearman": report["outlets"]["spearman"]}
    metrics = {"metric_for_best": cfg.metric_for_best, "best_epoch": 1, "best_value": report[cfg.metric_for_best],
               "epochs": [row], "train_seconds": seconds, "validation": report,
               "calibration": asdict(calibration) if calibration else None, "test": None, "test_uncalibrated": None}
    test_probs = None
    if test_data is not None:
        test_probs = article_probs(test_logits, temperature)
        metrics["test"] = report_from_probs(test_data.labels, test_data.sources, test_probs, temperature)
        metrics["test_uncalibrated"] = report_from_probs(test_data.labels, test_data.sources,
                                                         article_probs(test_logits), 1.0)
    return metrics, calibration, val_probs, test_probs


def _is_better(metric: str, new: float, best: float | None) -> bool:
    if best is None:
        return True
    return new < best if metric == "val_loss" else new > best


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


def _encode(tokenizer, data: LabelledData, max_length: int, stride: int = 64, windows: int = 1) -> Encoded:
    w = encode_windows(tokenizer, data.texts, max_length, stride, windows)
    return Encoded(ids=w.ids, labels=data.labels, sources=data.sources, owner=w.owner, weight=w.weight)


def text_prep(cfg: TrainConfig) -> TextPrep:
    """The text preparation a recipe trains (and its model will score) with."""
    return TextPrep(mask_outlet=cfg.mask_outlet, mask_version=MASK_VERSION if cfg.mask_outlet else 0)


def _subsample(idx: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or len(idx) <= limit:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, size=limit, replace=False))


def _lr_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    """Hugging Face's schedules, stepped once per optimizer step: lr rises linearly from 0 over
    cfg.warmup_steps, then decays linearly to 0 at total_steps ("linear") or stays ("constant")."""
    name = "linear" if cfg.lr_scheduler == "linear" else "constant_with_warmup"
    return transformers.get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup_steps,
                                      num_training_steps=total_steps)


def train_model(cfg: TrainConfig) -> TrainResult:
    """Fine-tune cfg.base_model on cfg.data and write a complete model directory to cfg.output."""
    # ---- 1. inputs
    _check_output(cfg)
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
    _write_output(cfg, fitted, prep, recipe)
    return TrainResult(output_dir=cfg.output, metrics=fitted.metrics)


def limit_rows(data: LabelledData, limit: int | None, seed: int) -> LabelledData:
    """A seeded random subset of at most `limit` rows (all rows when limit is None)."""
    if limit is None or len(data) <= limit:
        return data
    return data.subset(_subsample(np.arange(len(data)), limit, seed))


def fit(cfg: TrainConfig, train_data: LabelledData, val_data: LabelledData,
        test_data: LabelledData | None = None) -> Fitted:
    """Train a model of cfg.kind on train_data, select and calibrate it on val_data and report test_data
    (if given). Texts must already be prepared with text_prep(cfg). max_train_samples limits an
    ensemble's transformer half only: the linear half reads every training article in seconds."""
    val_data = limit_rows(val_data, cfg.max_eval_samples, cfg.seed)
    if cfg.kind != "ensemble":
        train_data = limit_rows(train_data, cfg.max_train_samples, cfg.seed)
    overlap = set(train_data.sources) & set(val_data.sources)
    print(f"data: train {len(train_data)} articles / {len(set(train_data.sources))} outlets, validation "
          f"{len(val_data)} / {len(set(val_data.sources))} ({cfg.split} split by {cfg.group_by}; {len(overlap)} "
          "outlet(s) in both)", file=sys.stderr)
    if cfg.kind == "linear":
        from .linear import fit_linear_model

        return fit_linear_model(cfg, train_data, val_data, test_data)
    if cfg.kind == "ensemble":
        from .ensemble import fit_ensemble

        return fit_ensemble(cfg, train_data, val_data, test_data)
    return fit_transformer(cfg, train_data, val_data, test_data)


def fit_transformer(cfg: TrainConfig, train_data: LabelledData, val_data: LabelledData,
                    test_data: LabelledData | None = None) -> Fitted:
    """Fine-tune cfg.base_model on train_data, pick the best epoch on val_data, fit the temperature on
    val_data and report test_data (if given) with it."""

    # ---- 2. model and tokens
    set_seed(cfg.seed)
    device = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.precision, device)
    tokenizer = load_tokenizer(cfg.base_model)
    model = load_base_model(cfg.base_model).to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    max_length = min(cfg.max_length, getattr(model.config, "max_position_embeddings", cfg.max_length))
    enc_args = (max_length, cfg.window_stride, cfg.train_windows)
    train_enc, val_enc = _encode(tokenizer, train_data, *enc_args), _encode(tokenizer, val_data, *enc_args)
    test_enc = _encode(tokenizer, test_data, *enc_args) if test_data is not None else None
    window_labels = train_enc.labels[train_enc.owner]                          # (M,) label of each window

    # ---- 3. recipe options: outlet adversary, class weights
    adversary, window_outlets = None, None
    if cfg.adversary_weight > 0:
        outlet_ids, outlet_names = outlet_index(train_data.sources)
        window_outlets = outlet_ids[train_enc.owner]                           # (M,)
        adversary = OutletAdversary(model.config.hidden_size, len(outlet_names), cfg.adversary_weight).to(device)
    loss_weight = None
    if cfg.class_balance == "loss":
        loss_weight = torch.as_tensor(class_weights(window_labels, len(LABELS)), dtype=torch.float32, device=device)

    # ---- 4. optimizer and schedule (Adam; weight_decay 0 makes AdamW exactly Adam)
    steps_per_epoch = math.ceil(len(train_enc) / cfg.train_batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    groups = [{"params": list(model.parameters()), "lr": cfg.learning_rate}]
    if adversary is not None:
        groups.append({"params": list(adversary.parameters()), "lr": cfg.adversary_lr})
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay,
                                  fused=device.type == "cuda")
    scheduler = _lr_scheduler(cfg, optimizer, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    generator = torch.Generator().manual_seed(cfg.seed)

    # ---- 5. the loop
    history: list[dict] = []
    best_value, best_epoch, best_state, stale = None, None, None, 0
    val_logits: np.ndarray | None = None
    step = 0
    start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        if adversary is not None:
            adversary.train()
        if cfg.class_balance == "sampler":
            order = balanced_order(window_labels, len(LABELS), generator)
        else:
            order = torch.randperm(len(train_enc), generator=generator).tolist()
        losses: list[float] = []
        adv_losses: list[float] = []
        seen, t0 = 0, time.perf_counter()
        bar = tqdm(range(0, len(order), cfg.train_batch_size), desc=f"epoch {epoch}/{cfg.epochs}",
                   unit="batch", mininterval=1.0, file=sys.stderr, dynamic_ncols=True)
        for b in bar:
            idx = order[b:b + cfg.train_batch_size]
            ids, mask = pad_batch([train_enc.ids[i] for i in idx], pad_id)       # (B, T), (B, T)
            labels = torch.as_tensor(window_labels[idx], device=device)          # (B,)
            with _autocast(device, dtype):
                out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                            output_hidden_states=adversary is not None)
            loss = F.cross_entropy(out.logits.float(), labels, weight=loss_weight)  # logits (B, 3)
            losses.append(loss.item())  # the label loss alone: what the card's "Training Loss" means
            if adversary is not None:
                with _autocast(device, dtype):
                    outlet_logits = adversary(sentence_features(out))            # (B, n_outlets)
                targets = torch.as_tensor(window_outlets[idx], device=device)    # (B,)
                adv_loss = F.cross_entropy(outlet_logits.float(), targets)
                adv_losses.append(adv_loss.item())
                loss = loss + adv_loss  # the reversal layer scales and flips its gradient into the encoder
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            seen += len(idx)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", samples_s=f"{seen / (time.perf_counter() - t0):.1f}")
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
        bar.close()
        train_seconds = time.perf_counter() - t0
        epoch_logits = predict_logits(model, val_enc.ids, cfg.eval_batch_size, pad_id, device, dtype)
        report = report_from_logits(val_enc, epoch_logits)
        row = {
            "epoch": round(epoch - 1 + seen / len(train_enc), 4), "step": step,
            "train_loss": float(np.mean(losses)), "val_loss": report["val_loss"],
            "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
            "per_class_f1": {k: v["f1"] for k, v in report["per_class"].items()},
            "ece": report["ece"], "outlet_spearman": report["outlets"]["spearman"],
            "train_samples_per_s": seen / train_seconds,
        }
        if adv_losses:
            row["adversary_loss"] = float(np.mean(adv_losses))
        history.append(row)
        print(f"epoch {row['epoch']}: train_loss {row['train_loss']:.4f} val_loss {row['val_loss']:.4f} "
              f"acc {row['accuracy']:.4f} macro_f1 {row['macro_f1']:.4f} ({row['train_samples_per_s']:.1f} "
              "samples/s)", file=sys.stderr)
        if _is_better(cfg.metric_for_best, row[cfg.metric_for_best], best_value):
            best_value, best_epoch, stale = row[cfg.metric_for_best], row["epoch"], 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            val_logits = epoch_logits  # the best weights' validation logits: no second pass needed
        else:
            stale += 1
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
        if cfg.early_stopping and stale >= cfg.early_stopping:
            print(f"early stopping: no {cfg.metric_for_best} improvement for {stale} epochs", file=sys.stderr)
            break

    # ---- 6. best weights, temperature on validation, test
    model.load_state_dict(best_state)
    calibration = None
    temperature = 1.0
    if cfg.calibrate:
        calibration = fit_temperature(val_logits, val_enc.labels, val_enc.owner, val_enc.weight)
        temperature = calibration.temperature
        print(f"temperature {temperature:.3f}: validation ECE {calibration.ece_before:.4f} -> "
              f"{calibration.ece_after:.4f}, NLL {calibration.nll_before:.4f} -> {calibration.nll_after:.4f}",
              file=sys.stderr)
    metrics = {"metric_for_best": cfg.metric_for_best, "best_epoch": best_epoch, "best_value": best_value,
               "epochs": history, "train_seconds": time.perf_counter() - start,
               "validation": report_from_logits(val_enc, val_logits, temperature),
               "calibration": asdict(calibration) if calibration else None, "test": None, "test_uncalibrated": None}
    test_probs = None
    if test_enc is not None:
        test_logits = predict_logits(model, test_enc.ids, cfg.eval_batch_size, pad_id, device, dtype)
        metrics["test"] = report_from_logits(test_enc, test_logits, temperature)
        metrics["test_uncalibrated"] = report_from_logits(test_enc, test_logits, 1.0)
        test_probs = article_probs(test_logits, temperature, test_enc.owner, test_enc.weight, len(test_enc.labels))
    val_probs = article_probs(val_logits, temperature, val_enc.owner, val_enc.weight, len(val_enc.labels))
    return Fitted(model=model, tokenizer=tokenizer, metrics=metrics, calibration=calibration,
                  max_length=max_length, steps=step, device=device, dtype=dtype, val_probs=val_probs,
                  test_probs=test_probs)


def save_fitted(fitted: Fitted, out_dir: str, prep: TextPrep) -> None:
    """The files `score` loads: weights (safetensors only) and config or vectorizer, the model kind, the
    text preparation and the temperature. An ensemble holds one complete model per member subdirectory."""
    if fitted.kind == "ensemble":
        for member in ENSEMBLE_MEMBERS:
            part = fitted.model[member]
            sub = os.path.join(out_dir, member)
            os.makedirs(sub)
            save_fitted(part, sub, prep)
            write_json(os.path.join(sub, "training_recipe.json"), {"max_length_used": part.max_length,
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


def _write_output(cfg: TrainConfig, fitted: Fitted, prep: TextPrep, recipe: dict) -> None:
    """Write everything to a sibling temporary directory, then move it into place: an interrupted run
    never leaves a half-written model where a good one was."""
    final = os.path.abspath(cfg.output)
    tmp = f"{final}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_fitted(fitted, tmp, prep)
    write_json(os.path.join(tmp, "training_recipe.json"), recipe)
    write_json(os.path.join(tmp, "metrics.json"), fitted.metrics)
    with open(os.path.join(tmp, "README.md"), "w") as fh:
        fh.write(model_card(cfg, recipe, fitted.metrics))
    if os.path.isdir(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
