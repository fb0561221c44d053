"""The scoring engine: articles → token ids (in worker processes) → length-bucketed batches filled to a
token budget → model forward (autocast + SDPA on GPU, halving the batch on CUDA out-of-memory) →
left/center/right probabilities. `Scorer` is usable on its own (`Scorer.from_config(cfg).predict(texts)`).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ..config import WINDOW_STRIDE, ScoreConfig, stride_limit
from ..errors import UserError
from ..models.calibration import load_temperature, softmax, window_mean
from ..models.description import ModelDescription, describe_model
from ..models.hardware import resolve_device, resolve_precision
from ..models.hub import load_classifier, load_tokenizer
from ..runtime.shutdown import ignore_interrupt
from ..runtime.stall import SCORE_STALL_ENV, stall_point
from ..text.prep import TextPrep, prepare_text
from ..text.windows import Encoded, encode_windows, head_tokens, pad_batch

__all__ = ["EncodeSpec", "Encoded", "Placement", "Scorer", "TextEncoder", "Tokenizers", "die_with_parent",
           "encode_texts", "forward_with_halving", "head_tokens", "merge_encoded", "prepare_rows", "token_batches"]


@dataclass(frozen=True)
class EncodeSpec:
    """What a tokenizer process needs to turn articles into model input, picklable for spawn: token ids
    for a transformer (tokenizer in `model_dir`), linear logits for a linear model (in `linear_dir`), both
    for an ensemble."""

    model_dir: str | None
    prep: TextPrep
    max_length: int
    long_text: str = "truncate"
    stride: int = WINDOW_STRIDE
    linear_dir: str | None = None
    max_windows: int = ScoreConfig.max_windows  # chunk mode: windows kept per article; see encode_texts


class TextEncoder:
    """Prepared texts → Encoded, with the spec's tokenizer and/or linear model loaded once."""

    def __init__(self, spec: EncodeSpec):
        from ..models.linear import LinearModel

        self.spec = spec
        self.tokenizer = load_tokenizer(spec.model_dir) if spec.model_dir else None
        self.linear = LinearModel.load(spec.linear_dir) if spec.linear_dir else None

    def encode(self, texts: list[str]) -> Encoded:
        if self.tokenizer is not None:
            enc = encode_texts(self.tokenizer, texts, self.spec)
        else:  # linear alone: no sequences; n_tokens counts the words the model read (all of them)
            enc = Encoded([], np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(len(texts), np.int32),
                          np.zeros(len(texts), bool))
        if self.linear is not None:
            enc.linear_logits, words = self.linear.logits_and_words(texts)
            if self.tokenizer is None:
                enc.n_tokens = words
        return enc


def prepare_rows(prep: TextPrep, titles: Sequence[str | None], texts: Sequence[str],
                 sources: Sequence[str | None]) -> list[str]:
    """The shared text preparation, with the outlet so that a masking model's TextPrep can mask it."""
    return [prepare_text(t, x, prep, source=s) for t, x, s in zip(titles, texts, sources)]


def encode_texts(tokenizer, texts: list[str], spec: EncodeSpec) -> Encoded:
    """Prepared texts → windows (text.windows.encode_windows): truncate, one per text, its first
    max_length tokens; chunk, at most `max_windows` per text. Ids as int32 arrays, compact to send
    back from a tokenizer process."""
    cap = 1 if spec.long_text == "truncate" else spec.max_windows
    enc = encode_windows(tokenizer, texts, spec.max_length, spec.stride, cap)
    enc.seqs = [np.asarray(s, np.int32) for s in enc.seqs]
    return enc


# ---- child processes die with their parent ----------------------------------------------------------------
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int, kernel_signal: bool = False) -> None:
    """Exit this process as soon as `parent_pid`, the process that started it, is gone, so that a parent
    killed with SIGKILL leaves no device or tokenizer process behind (daemonic multiprocessing children
    are only cleaned up by a parent that exits normally). A daemon thread checks every 0.5 s whether this
    process has been re-parented and calls os._exit(1). With `kernel_signal` (Linux), the kernel also sends
    SIGKILL the moment the parent dies (PR_SET_PDEATHSIG); it fires when the *thread* that started this
    process ends, so use it only for children whose starting thread outlives them."""
    if kernel_signal and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still covers it
    if os.getppid() != parent_pid:  # the parent died before this process got here
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


# ---- tokenizer worker processes -------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(spec: EncodeSpec, parent_pid: int | None = None) -> None:
    if parent_pid is not None:
        # Not PR_SET_PDEATHSIG: a replacement worker is started by the pool's own thread, which ends first.
        die_with_parent(parent_pid)
    ignore_interrupt()  # Ctrl-C reaches the whole process group; the parent ends its workers
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one Rust thread per process; the processes are the parallelism
    torch.set_num_threads(1)
    _WORKER["spec"], _WORKER["encoder"] = spec, TextEncoder(spec)


def _worker_encode(args: tuple[list, list, list]) -> Encoded:
    titles, texts, sources = args
    stall_point(SCORE_STALL_ENV, "encode")  # test seam: a worker stopped (and killed) part-way through a chunk
    return _WORKER["encoder"].encode(prepare_rows(_WORKER["spec"].prep, titles, texts, sources))


def merge_encoded(parts: list[Encoded]) -> Encoded:
    offset, owners = 0, []
    for p in parts:
        owners.append(p.owner + offset)
        offset += p.rows
    linear = [p.linear_logits for p in parts]
    return Encoded([s for p in parts for s in p.seqs], np.concatenate(owners) if owners else np.zeros(0, int),
                   np.concatenate([p.weight for p in parts]) if parts else np.zeros(0, np.float32),
                   np.concatenate([p.n_tokens for p in parts]) if parts else np.zeros(0, np.int32),
                   np.concatenate([p.truncated for p in parts]) if parts else np.zeros(0, bool),
                   np.concatenate(linear) if parts and all(x is not None for x in linear) else None)


class Tokenizers:
    """Articles → Encoded, in `workers` spawned processes (0 = in the calling thread; the Rust tokenizer
    releases the GIL, so a feeder thread still overlaps the model).

    The processes are a concurrent.futures process pool: a worker that dies (killed, out of memory) fails
    the waiting call with BrokenProcessPool instead of leaving it waiting for a result that never comes,
    and shutting the pool down takes no lock a dead worker may hold (multiprocessing.Pool's terminate can
    wait forever on one)."""

    CHUNK = 256

    def __init__(self, spec: EncodeSpec, workers: int):
        self.spec, self.workers = spec, workers
        self._pool = (ProcessPoolExecutor(workers, mp.get_context("spawn"), _init_worker, (spec, os.getpid()))
                      if workers > 0 else None)
        self._encoder = None if self._pool else TextEncoder(spec)

    def submit(self, titles: list, texts: list, sources: list) -> Callable[[], Encoded]:
        """Start encoding; returns a function that waits for the result (lets the caller keep two in flight)."""
        if self._pool is None:  # encode now, in the calling (feeder) thread
            done = self._encoder.encode(prepare_rows(self.spec.prep, titles, texts, sources))
            return lambda: done
        c = self.CHUNK
        pending = [self._pool.submit(_worker_encode, (titles[i:i + c], texts[i:i + c], sources[i:i + c]))
                   for i in range(0, len(texts), c)]
        return lambda: merge_encoded([f.result() for f in pending])

    def close(self) -> None:
        """Stop the workers: queued chunks are cancelled, a chunk being encoded finishes (a fraction of a
        second), then every worker exits. Safe to call after a worker died."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


# ---- batching and the forward pass ----------------------------------------------------------------------
def token_batches(lengths: np.ndarray, batch_tokens: int, multiple: int = 1) -> list[np.ndarray]:
    """Indices grouped longest-first into batches whose padded size (rows × longest) fits `batch_tokens`."""
    order = np.argsort(-lengths, kind="stable")
    batches, current, longest = [], [], 0
    for i in order:
        padded = -(-int(lengths[i]) // multiple) * multiple
        longest = max(longest, padded)
        if current and longest * (len(current) + 1) > batch_tokens:
            batches.append(np.asarray(current))
            current, longest = [], padded
        current.append(i)
    if current:
        batches.append(np.asarray(current))
    return batches


def forward_with_halving(forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ids: torch.Tensor,
                         mask: torch.Tensor, on_halve: Callable[[int], None] = lambda tokens: None) -> torch.Tensor:
    """forward(ids, mask); on out-of-memory, split the batch in two and retry each half. Never drops rows.
    on_halve(tokens) is told each split, with the padded size (rows x width) of the batch that did not fit."""
    try:
        return forward(ids, mask)
    except torch.cuda.OutOfMemoryError:  # the same class as torch.OutOfMemoryError on torch >= 2.5
        if ids.shape[0] == 1:
            raise UserError("out of GPU memory on a single article; lower --max-length") from None
    # Retried outside the except block, so the failed attempt's tensors are freed before the halves run.
    on_halve(ids.shape[0] * ids.shape[1])
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = ids.shape[0] // 2
    return torch.cat([forward_with_halving(forward, ids[:half], mask[:half], on_halve),
                      forward_with_halving(forward, ids[half:], mask[half:], on_halve)])


_INT8_ON_GPU = "--quantize int8 is for CPU scoring; on a GPU use --precision bf16/fp16"


def _check_lengths(cfg: ScoreConfig, max_length: int, config) -> None:
    """max_length within the model's position table; the chunk stride and window cap that fit it."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions and max_length > positions:
        raise UserError(f"--max-length {max_length} exceeds the model's {positions} positions")
    if cfg.long_text == "chunk" and cfg.stride >= stride_limit(max_length):
        raise UserError(f"--stride {cfg.stride} must be smaller than --max-length {max_length} minus 2")
    if cfg.max_windows < 1:
        raise UserError(f"--max-windows {cfg.max_windows}: an article needs at least one window")


def _ready(model, quantize: str, dev: torch.device):
    """The classifier for inference on `dev`: evaluation mode, no gradients, int8 when asked (CPU only)."""
    model.eval().requires_grad_(False)
    if quantize == "int8":
        if dev.type != "cpu":  # --device auto on a machine with a GPU
            raise UserError(_INT8_ON_GPU)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        # Per-channel scales agree with fp32 more often than one scale per tensor, at the same speed:
        # docs/scoring.md, "Throughput" (the int8 rows and their reading).
        with warnings.catch_warnings():  # torch announces eager-mode quantization's move to torchao
            warnings.simplefilter("ignore")
            model = quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    return model.to(dev)


def _batch_tokens(cfg: ScoreConfig, dev: torch.device, max_length: int) -> int:
    """--batch-tokens, else the device's default; at least one window."""
    budget = cfg.batch_tokens or (131072 if dev.type == "cuda" else 16384)
    if budget < max_length:
        raise UserError(f"--batch-tokens {budget} must be at least --max-length {max_length}")
    return budget


@dataclass(frozen=True)
class Placement:
    """Where and how the transformer runs: the device, the autocast dtype, the tokens a batch may hold at
    first (Scorer.batch_tokens shrinks after an out-of-memory) and int8 quantization."""

    device: torch.device
    dtype: torch.dtype = torch.float32
    batch_tokens: int = 0
    quantize: str = "none"


class Scorer:
    """A loaded model ready to turn encoded articles into left/center/right probabilities. The
    transformer runs here; a linear model's logits arrive computed in the tokenizer workers
    (Encoded.linear_logits), so on a GPU worker the linear half of an ensemble never slows the forward loop."""

    def __init__(self, described: ModelDescription, spec: EncodeSpec, placement: Placement, model=None,
                 tokenizer=None, temperatures: tuple[float, float] = (1.0, 1.0)):
        """`temperatures`: the transformer's and the linear model's (models/calibration.py)."""
        self.described, self.spec, self.model, self.tokenizer = described, spec, model, tokenizer
        self.model_dir, self.kind, self.weights = described.model_dir, described.kind, described.weights
        self.order, self.max_length = list(described.order), described.max_length
        self.device, self.dtype, self.quantize = placement.device, placement.dtype, placement.quantize
        self.batch_tokens = placement.batch_tokens
        self.temperature, self.linear_temperature = temperatures
        self.pad_id = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0
        self.halvings = 0
        self._encoder: TextEncoder | None = None

    @classmethod
    def from_config(cls, cfg: ScoreConfig, device: str | None = None,
                    described: ModelDescription | None = None) -> Scorer:
        """Load model and tokenizer once; refuse unmappable labels and bad options before any work.
        `described`: the model as the run's plan described it (models/description.py), so that the directory
        is not read again; without it, it is described here."""
        described = described or describe_model(cfg)
        requested = device or cfg.device
        # Refused for what was asked, before resolve_device: the answer must not depend on whether this
        # machine happens to see a GPU (there resolve_device would refuse with "no CUDA device" instead).
        if cfg.quantize == "int8" and described.kind != "linear" and requested.startswith("cuda"):
            raise UserError(_INT8_ON_GPU)
        dev = resolve_device(requested)
        prep = TextPrep.load(described.model_dir)
        linear_t = load_temperature(described.linear_dir) if described.linear_dir else 1.0
        if described.kind == "linear":
            if cfg.quantize == "int8":
                raise UserError("--quantize int8 applies to transformer models; a linear model needs no quantizing")
            spec = EncodeSpec(None, prep, 0, "truncate", cfg.stride, described.linear_dir)
            return cls(described, spec, Placement(dev), temperatures=(1.0, linear_t))
        transformer_dir, max_length = described.transformer_dir, described.max_length
        tokenizer = load_tokenizer(transformer_dir)  # first: it refuses a directory without a usable one
        model = load_classifier(transformer_dir)
        dtype = resolve_precision(cfg.precision, dev)
        _check_lengths(cfg, max_length, model.config)
        model = _ready(model, cfg.quantize, dev)
        placement = Placement(dev, dtype, _batch_tokens(cfg, dev, max_length), cfg.quantize)
        spec = EncodeSpec(transformer_dir, prep, max_length, cfg.long_text, cfg.stride, described.linear_dir,
                          cfg.max_windows)
        return cls(described, spec, placement, model, tokenizer, (load_temperature(transformer_dir), linear_t))

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        use_autocast = self.dtype != torch.float32
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=use_autocast):
            return self.model(input_ids=ids, attention_mask=mask).logits

    def _halve(self, failed_tokens: int) -> None:
        """Later batches start smaller: at most half the batch that ran out of memory. Half of the failed
        batch, not half the budget again for every split: the halves of one batch failing in turn shrink
        it once per level, not once per failure."""
        self.halvings += 1
        self.batch_tokens = max(self.max_length, min(self.batch_tokens, failed_tokens // 2))

    def sequence_probs(self, seqs: list[np.ndarray]) -> np.ndarray:
        """(S, 3) probabilities in left/center/right order for each id sequence."""
        if not seqs:
            return np.zeros((0, 3), np.float32)
        lengths = np.fromiter((len(s) for s in seqs), int, len(seqs))
        cuda = self.device.type == "cuda"
        logits_out, index_out = [], []
        todo = np.arange(len(seqs))
        with torch.inference_mode():
            while len(todo):
                budget = self.batch_tokens
                for batch in token_batches(lengths[todo], budget, multiple=8 if cuda else 1):
                    idx = todo[batch]
                    t_ids, t_mask = pad_batch([seqs[i] for i in idx], self.pad_id)  # (B, L) right-padded
                    if cuda:  # pinned host memory lets the copy run while the GPU still works on the last batch
                        t_ids = t_ids.pin_memory().to(self.device, non_blocking=True)
                        t_mask = t_mask.pin_memory().to(self.device, non_blocking=True)
                    logits = forward_with_halving(self._forward, t_ids, t_mask, self._halve)  # (B, C)
                    logits_out.append(logits.float())  # stays on the device: one sync per call, not per batch
                    index_out.append(idx)
                    if self.batch_tokens != budget:  # out of memory: the rest is batched again to the new budget
                        break
                todo = np.setdiff1d(todo, np.concatenate(index_out), assume_unique=True)
            logits = torch.cat(logits_out)[:, self.order]
            if self.temperature != 1.0:
                logits = logits / self.temperature
            probs = torch.softmax(logits, dim=-1).cpu().numpy()
        out = np.empty_like(probs)
        out[np.concatenate(index_out)] = probs
        return out

    def row_probs(self, enc: Encoded) -> np.ndarray:
        """(rows, 3) probabilities in left/center/right order, by the model's kind."""
        if self.kind == "linear":
            return softmax(enc.linear_logits, self.linear_temperature).astype(np.float32)
        probs = self.transformer_row_probs(enc)
        if self.kind == "ensemble":
            from ..models.ensemble import combine

            linear = softmax(enc.linear_logits, self.linear_temperature)
            return combine({"transformer": probs, "linear": linear}, self.weights).astype(np.float32)
        return probs

    def transformer_row_probs(self, enc: Encoded) -> np.ndarray:
        """(rows, 3): a row's windows averaged, weighted by their content tokens (truncate: one window each)."""
        seq = self.sequence_probs(enc.seqs)
        if len(enc.seqs) == enc.rows and np.array_equal(enc.owner, np.arange(enc.rows)):
            return seq
        return window_mean(seq, enc.owner, enc.weight, enc.rows).astype(np.float32)

    def encode(self, texts: list[str]) -> Encoded:
        if self._encoder is None:  # built on first use: score_corpus encodes in Tokenizers instead
            self._encoder = TextEncoder(self.spec)
        return self._encoder.encode(texts)

    def predict_with_tokens(self, texts: list[str]) -> tuple[np.ndarray, Encoded]:
        """Prepared texts → ((N, 3) probabilities left/center/right, their Encoded with token counts)."""
        enc = self.encode(texts)
        return self.row_probs(enc), enc

    def predict(self, texts: list[str]) -> np.ndarray:
        """Prepared texts (see prepare_rows) → (N, 3) probabilities in left/center/right order."""
        return self.predict_with_tokens(texts)[0]
