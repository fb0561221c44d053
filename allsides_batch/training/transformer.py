"""Fine-tuning a transformer: tokens → loop (evaluate every epoch, keep the best, stop early) →
calibrate. Plain PyTorch rather than the Hugging Face Trainer: dynamic padding, one pre-tokenization
pass with character cuts, length-sorted evaluation. bench/speed/train_bench.py compares the two on the same
recipe. The outlet-robust options (masking, adversary, class balancing, several windows per article,
temperature scaling) live in text/masking.py, robust.py, text/windows.py and calibration.py; here they
are only wired in."""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass

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
from .fitted import Fitted, epoch_row, fit_metrics, report_from_probs
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


@dataclass
class _Run:
    """What the epochs work on: the model on its device, the encoded splits and the recipe's options."""

    model: object
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    pad_id: int
    max_length: int
    train_enc: Encoded
    val_enc: Encoded
    test_enc: Encoded | None
    window_labels: np.ndarray                     # (M,) label of each training window
    adversary: OutletAdversary | None = None
    window_outlets: np.ndarray | None = None      # (M,) outlet of each training window, with the adversary
    loss_weight: torch.Tensor | None = None       # (C,) with --class-balance loss


@dataclass
class _Optimizer:
    """Adam (weight_decay 0 makes AdamW exactly Adam), its schedule, the fp16 loss scaler and the
    generator that orders each epoch's windows."""

    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    generator: torch.Generator


@dataclass
class _Best:
    """The best epoch so far by cfg.metric_for_best: its weights (on the CPU), its validation logits
    (no second pass needed) and how many epochs since it improved."""

    metric: str
    value: float | None = None
    epoch: float | None = None
    state: dict | None = None
    logits: np.ndarray | None = None
    stale: int = 0

    def offer(self, row: dict, model, logits: np.ndarray) -> None:
        if _is_better(self.metric, row[self.metric], self.value):
            self.value, self.epoch, self.stale = row[self.metric], row["epoch"], 0
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            self.logits = logits
        else:
            self.stale += 1


def _prepare(cfg: TrainConfig, train_data: LabelledData, val_data: LabelledData,
             test_data: LabelledData | None) -> _Run:
    """The model and its tokens, then the recipe options: outlet adversary, class weights. The order
    (seed, model, adversary) fixes the random initial weights."""
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
    run = _Run(model=model, tokenizer=tokenizer, device=device, dtype=dtype, pad_id=pad_id, max_length=max_length,
               train_enc=train_enc, val_enc=val_enc, test_enc=test_enc,
               window_labels=train_enc.labels[train_enc.owner])
    if cfg.adversary_weight > 0:
        outlet_ids, outlet_names = outlet_index(train_data.sources)
        run.window_outlets = outlet_ids[train_enc.owner]
        run.adversary = OutletAdversary(model.config.hidden_size, len(outlet_names), cfg.adversary_weight).to(device)
    if cfg.class_balance == "loss":
        run.loss_weight = torch.as_tensor(class_weights(run.window_labels, len(LABELS)), dtype=torch.float32,
                                          device=device)
    return run


def _optimizer(cfg: TrainConfig, run: _Run) -> _Optimizer:
    """The optimizer over the model (and the adversary at its own learning rate) and its schedule over
    every step training will take (--max-steps caps it)."""
    steps_per_epoch = math.ceil(len(run.train_enc.seqs) / cfg.train_batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    groups = [{"params": list(run.model.parameters()), "lr": cfg.learning_rate}]
    if run.adversary is not None:
        groups.append({"params": list(run.adversary.parameters()), "lr": cfg.adversary_lr})
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay,
                                  fused=run.device.type == "cuda")
    return _Optimizer(optimizer=optimizer, scheduler=_lr_scheduler(cfg, optimizer, total_steps),
                      scaler=torch.amp.GradScaler(run.device.type, enabled=run.dtype == torch.float16),
                      generator=torch.Generator().manual_seed(cfg.seed))


def _train_step(run: _Run, opt: _Optimizer, idx: list[int]) -> tuple[float, float | None]:
    """One optimizer step on the training windows `idx`: (label loss, adversary loss or None)."""
    ids, mask = pad_batch([run.train_enc.seqs[i] for i in idx], run.pad_id)  # (B, T), (B, T)
    labels = torch.as_tensor(run.window_labels[idx], device=run.device)     # (B,)
    with _autocast(run.device, run.dtype):
        out = run.model(input_ids=ids.to(run.device), attention_mask=mask.to(run.device),
                        output_hidden_states=run.adversary is not None)
    loss = F.cross_entropy(out.logits.float(), labels, weight=run.loss_weight)  # logits (B, 3)
    label_loss = loss.item()  # the label loss alone: what the card's "Training Loss" means
    adv_value = None
    if run.adversary is not None:
        with _autocast(run.device, run.dtype):
            outlet_logits = run.adversary(sentence_features(out))               # (B, n_outlets)
        targets = torch.as_tensor(run.window_outlets[idx], device=run.device)   # (B,)
        adv_loss = F.cross_entropy(outlet_logits.float(), targets)
        adv_value = adv_loss.item()
        loss = loss + adv_loss  # the reversal layer scales and flips its gradient into the encoder
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scaler.scale(loss).backward()
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.scheduler.step()
    return label_loss, adv_value


def _train_epoch(cfg: TrainConfig, run: _Run, opt: _Optimizer, epoch: int, step: int) -> tuple[dict, int]:
    """One pass over the training windows (or up to --max-steps): the epoch row's training part (epoch,
    step, losses, speed) and the step count after it."""
    run.model.train()
    if run.adversary is not None:
        run.adversary.train()
    if cfg.class_balance == "sampler":
        order = balanced_order(run.window_labels, len(LABELS), opt.generator)
    else:
        order = torch.randperm(len(run.train_enc.seqs), generator=opt.generator).tolist()
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
        label_loss, adv_loss = _train_step(run, opt, idx)
        losses.append(label_loss)
        if adv_loss is not None:
            adv_losses.append(adv_loss)
        step += 1
        seen += len(idx)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", samples_s=f"{seen / (time.perf_counter() - t0):.1f}")
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
    bar.close()
    train = {"epoch": round(epoch - 1 + seen / len(run.train_enc.seqs), 4), "train_loss": float(np.mean(losses)),
             "train_samples_per_s": seen / (time.perf_counter() - t0)}
    if adv_losses:
        train["adversary_loss"] = float(np.mean(adv_losses))
    return train, step


def _validate(cfg: TrainConfig, run: _Run, epoch: int, step: int, train: dict) -> tuple[dict, np.ndarray]:
    """The epoch's row of metrics.json (validation at T = 1) and its validation window logits."""
    logits = predict_logits(run.model, run.val_enc.seqs, cfg.eval_batch_size, run.pad_id, run.device, run.dtype,
                            desc=f"validation {epoch}" if cfg.progress else None)
    row = epoch_row(report_from_logits(run.val_enc, logits), train["epoch"], step, train["train_loss"])
    row["train_samples_per_s"] = train["train_samples_per_s"]
    if "adversary_loss" in train:
        row["adversary_loss"] = train["adversary_loss"]
    log.info(f"epoch {row['epoch']}: train_loss {row['train_loss']:.4f} val_loss {row['val_loss']:.4f} "
             f"acc {row['accuracy']:.4f} macro_f1 {row['macro_f1']:.4f} ({row['train_samples_per_s']:.1f} "
             "samples/s)")
    return row, logits


def _window_probs(enc: Encoded, logits: np.ndarray, temperature: float) -> np.ndarray:
    return article_probs(logits, temperature, enc.owner, enc.weight, len(enc.labels))


def _finish(cfg: TrainConfig, run: _Run, best: _Best, history: list[dict], step: int, start: float) -> Fitted:
    """Best weights back in the model, the temperature fitted on validation, the test split reported."""
    run.model.load_state_dict(best.state)
    calibration = None
    temperature = 1.0
    val_enc, test_enc = run.val_enc, run.test_enc
    if cfg.calibrate:
        calibration = fit_temperature(best.logits, val_enc.labels, val_enc.owner, val_enc.weight)
        temperature = calibration.temperature
        log.info(f"temperature {temperature:.3f}: validation ECE {calibration.ece_before:.4f} -> "
                 f"{calibration.ece_after:.4f}, NLL {calibration.nll_before:.4f} -> {calibration.nll_after:.4f}")
    seconds = time.perf_counter() - start
    val_probs = _window_probs(val_enc, best.logits, temperature)
    validation = report_from_probs(val_enc.labels, val_enc.sources, val_probs, temperature)
    test_probs, test, test_uncalibrated = None, None, None
    if test_enc is not None:
        test_logits = predict_logits(run.model, test_enc.seqs, cfg.eval_batch_size, run.pad_id, run.device,
                                     run.dtype, desc="test" if cfg.progress else None)
        test_probs = _window_probs(test_enc, test_logits, temperature)
        test = report_from_probs(test_enc.labels, test_enc.sources, test_probs, temperature)
        test_uncalibrated = report_from_logits(test_enc, test_logits, 1.0)
    metrics = fit_metrics(cfg, history, (best.epoch, best.value), seconds, validation, calibration, test,
                          test_uncalibrated)
    return Fitted(model=run.model, tokenizer=run.tokenizer, metrics=metrics, calibration=calibration,
                  max_length=run.max_length, steps=step, device=run.device, dtype=run.dtype, val_probs=val_probs,
                  test_probs=test_probs)


def fit_transformer(cfg: TrainConfig, train_data: LabelledData, val_data: LabelledData,
                    test_data: LabelledData | None = None) -> Fitted:
    """Fine-tune cfg.base_model on train_data, pick the best epoch on val_data, fit the temperature on
    val_data and report test_data (if given) with it. Every epoch is validated; training stops at
    --max-steps, or after --early-stopping epochs without a better cfg.metric_for_best."""
    run = _prepare(cfg, train_data, val_data, test_data)
    opt = _optimizer(cfg, run)
    history: list[dict] = []
    best = _Best(cfg.metric_for_best)
    step = 0
    start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        train, step = _train_epoch(cfg, run, opt, epoch, step)
        row, logits = _validate(cfg, run, epoch, step, train)
        history.append(row)
        best.offer(row, run.model, logits)
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
        if cfg.early_stopping and best.stale >= cfg.early_stopping:
            log.info(f"early stopping: no {cfg.metric_for_best} improvement for {best.stale} epochs")
            break
    return _finish(cfg, run, best, history, step, start)
