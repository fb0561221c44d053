"""Fine-tuning a transformer: tokens → loop (evaluate every epoch, keep the best, stop early) →
calibrate. Plain PyTorch rather than the Hugging Face Trainer: dynamic padding, one pre-tokenization
pass with character cuts, length-sorted evaluation. bench/train_bench.py compares the two on the same
recipe. The outlet-robust options (masking, adversary, class balancing, several windows per article,
temperature scaling) live in text/masking.py, robust.py, text/windows.py and calibration.py; here they
are only wired in."""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from tqdm.auto import tqdm

from .. import LABELS
from ..config import WINDOW_STRIDE, TrainConfig
from ..models.calibration import article_probs, fit_temperature
from ..models.hardware import resolve_device, resolve_precision
from ..models.hub import load_base_model, load_tokenizer
from ..text.windows import Encoded, encode_windows, pad_batch
from .data import LabelledData
from .fitted import Fitted, report_from_probs
from .robust import OutletAdversary, balanced_order, class_weights, outlet_index, sentence_features

log = logging.getLogger(__name__)


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (CPU and every accelerator)."""
    transformers.set_seed(seed)


def _autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)


@torch.no_grad()
def predict_logits(model, rows: list[list[int]], batch_size: int, pad_id: int, device: torch.device,
                   dtype: torch.dtype, desc: str | None = None) -> np.ndarray:
    """Logits (N, C) in input order, float32; rows are batched by length so padding is small. `desc`
    draws a progress bar with that label on stderr."""
    model.eval()
    order = np.argsort([len(r) for r in rows], kind="stable")
    out = np.zeros((len(rows), model.config.num_labels), dtype=np.float32)
    starts = range(0, len(rows), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", mininterval=1.0, file=sys.stderr, dynamic_ncols=True,
                      disable=desc is None, leave=False):
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


def _is_better(metric: str, new: float, best: float | None) -> bool:
    if best is None:
        return True
    return new < best if metric == "val_loss" else new > best


def _encode(tokenizer, data: LabelledData, max_length: int, stride: int = WINDOW_STRIDE, windows: int = 1) -> Encoded:
    """Up to `windows` windows per article, carrying the articles' labels and outlets."""
    enc = encode_windows(tokenizer, data.texts, max_length, stride, windows)
    enc.labels, enc.sources = data.labels, data.sources
    return enc


def _lr_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    """Hugging Face's schedules, stepped once per optimizer step: lr rises linearly from 0 over
    cfg.warmup_steps, then decays linearly to 0 at total_steps ("linear") or stays ("constant")."""
    name = "linear" if cfg.lr_scheduler == "linear" else "constant_with_warmup"
    return transformers.get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup_steps,
                                      num_training_steps=total_steps)


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
    steps_per_epoch = math.ceil(len(train_enc.seqs) / cfg.train_batch_size)
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
            order = torch.randperm(len(train_enc.seqs), generator=generator).tolist()
        losses: list[float] = []
        adv_losses: list[float] = []
        seen, t0 = 0, time.perf_counter()
        starts = range(0, len(order), cfg.train_batch_size)
        bar = tqdm(starts, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", mininterval=1.0, file=sys.stderr,
                   dynamic_ncols=True, disable=not cfg.progress,
                   # --max-steps: the bar ends where training will
                   total=len(starts) if cfg.max_steps is None else max(0, min(len(starts), cfg.max_steps - step)))
        for b in bar:
            idx = order[b:b + cfg.train_batch_size]
            ids, mask = pad_batch([train_enc.seqs[i] for i in idx], pad_id)      # (B, T), (B, T)
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
        epoch_logits = predict_logits(model, val_enc.seqs, cfg.eval_batch_size, pad_id, device, dtype,
                                      desc=f"validation {epoch}" if cfg.progress else None)
        report = report_from_logits(val_enc, epoch_logits)
        row = {
            "epoch": round(epoch - 1 + seen / len(train_enc.seqs), 4), "step": step,
            "train_loss": float(np.mean(losses)), "val_loss": report["val_loss"],
            "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
            "per_class_f1": {k: v["f1"] for k, v in report["per_class"].items()},
            "ece": report["ece"], "outlet_spearman": report["outlets"]["spearman"],
            "train_samples_per_s": seen / train_seconds,
        }
        if adv_losses:
            row["adversary_loss"] = float(np.mean(adv_losses))
        history.append(row)
        log.info(f"epoch {row['epoch']}: train_loss {row['train_loss']:.4f} val_loss {row['val_loss']:.4f} "
                 f"acc {row['accuracy']:.4f} macro_f1 {row['macro_f1']:.4f} ({row['train_samples_per_s']:.1f} "
                 "samples/s)")
        if _is_better(cfg.metric_for_best, row[cfg.metric_for_best], best_value):
            best_value, best_epoch, stale = row[cfg.metric_for_best], row["epoch"], 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            val_logits = epoch_logits  # the best weights' validation logits: no second pass needed
        else:
            stale += 1
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
        if cfg.early_stopping and stale >= cfg.early_stopping:
            log.info(f"early stopping: no {cfg.metric_for_best} improvement for {stale} epochs")
            break

    # ---- 6. best weights, temperature on validation, test
    model.load_state_dict(best_state)
    calibration = None
    temperature = 1.0
    if cfg.calibrate:
        calibration = fit_temperature(val_logits, val_enc.labels, val_enc.owner, val_enc.weight)
        temperature = calibration.temperature
        log.info(f"temperature {temperature:.3f}: validation ECE {calibration.ece_before:.4f} -> "
                 f"{calibration.ece_after:.4f}, NLL {calibration.nll_before:.4f} -> {calibration.nll_after:.4f}")
    metrics = {"metric_for_best": cfg.metric_for_best, "best_epoch": best_epoch, "best_value": best_value,
               "epochs": history, "train_seconds": time.perf_counter() - start,
               "validation": report_from_logits(val_enc, val_logits, temperature),
               "calibration": asdict(calibration) if calibration else None, "test": None, "test_uncalibrated": None}
    test_probs = None
    if test_enc is not None:
        test_logits = predict_logits(model, test_enc.seqs, cfg.eval_batch_size, pad_id, device, dtype,
                                     desc="test" if cfg.progress else None)
        metrics["test"] = report_from_logits(test_enc, test_logits, temperature)
        metrics["test_uncalibrated"] = report_from_logits(test_enc, test_logits, 1.0)
        test_probs = article_probs(test_logits, temperature, test_enc.owner, test_enc.weight, len(test_enc.labels))
    val_probs = article_probs(val_logits, temperature, val_enc.owner, val_enc.weight, len(val_enc.labels))
    return Fitted(model=model, tokenizer=tokenizer, metrics=metrics, calibration=calibration,
                  max_length=max_length, steps=step, device=device, dtype=dtype, val_probs=val_probs,
                  test_probs=test_probs)

