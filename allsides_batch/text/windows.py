"""Token windows, the model input of training and scoring alike: windows of max_length tokens (special
tokens included), consecutive windows sharing `stride` content tokens, at most `max_windows` of them
(the first ones) per article; an article's probabilities are averaged over its windows weighted by
their content tokens. One window per article is plain truncation.

Training reads at most `train_windows` windows from the start of each article (articles average about
1,200 tokens, so 3 windows of 512 cover most of one), each window a training example carrying the
article's label; the scorer's truncate mode reads one, its chunk mode at most `max_windows`.
`pad_batch` turns a batch of windows into the model's input tensors for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .prep import CHARS_PER_TOKEN, cut_text, encode, special_token_layout, window_spans


@dataclass
class Encoded:
    """Token windows (M) of N articles (rows): seqs[m] belongs to article owner[m]. Training adds the
    articles' labels and outlets; the scorer adds a linear model's logits where the model has one."""

    seqs: list                  # M token id rows, special tokens included (lists; int32 arrays in the scorer)
    owner: np.ndarray           # (M,) int64 article of each window
    weight: np.ndarray          # (M,) float32 content tokens per window: the averaging weight
    n_tokens: np.ndarray        # (N,) int32 tokens the windows read, special tokens included (linear: words)
    truncated: np.ndarray       # (N,) bool: tokens beyond the kept windows were left unread
    linear_logits: np.ndarray | None = None  # (N, 3) scoring: the linear model's logits (linear and ensemble kinds)
    labels: np.ndarray | None = None         # (N,) training: label of each article
    sources: list[str] | None = None         # (N,) training: outlet of each article

    @property
    def rows(self) -> int:
        """Articles."""
        return len(self.n_tokens)


def encode_windows(tokenizer, texts: list[str], max_length: int, stride: int, max_windows: int) -> Encoded:
    """Prepared texts → windows, at most `max_windows` (the first ones) per text, `truncated` where more
    would have followed. max_windows=1 is text.encode's truncation exactly (it cuts by characters first)."""
    n_pre, n_suf = special_token_layout(tokenizer)
    if max_windows <= 1:
        ids, n_tok, cut = encode(tokenizer, texts, max_length)
        weight = np.maximum(np.asarray(n_tok, dtype=np.float32) - (n_pre + n_suf), 1)
        return Encoded(ids, np.arange(len(ids), dtype=np.int64), weight, np.asarray(n_tok, np.int32),
                       np.asarray(cut, bool))
    full = tokenizer("hello")["input_ids"]
    prefix, suffix = full[:n_pre], (full[len(full) - n_suf:] if n_suf else [])
    window = max_length - n_pre - n_suf
    covered = window + (max_windows - 1) * (window - stride)  # content tokens the first max_windows windows span
    # One token more than the kept windows cover tells a text needing more windows from one ending there.
    content = head_tokens(tokenizer, texts, covered + 1)
    seqs, owner, weight, n_tokens, truncated = [], [], [], [], []
    for row, toks in enumerate(content):
        spans = window_spans(len(toks), window, stride)
        dropped = len(spans) > max_windows
        for start, end in spans[:max_windows]:
            seqs.append(prefix + toks[start:end] + suffix)
            owner.append(row)
            weight.append(max(end - start, 1))  # a text of no tokens still gets its one (special-only) window
        n_tokens.append((covered if dropped else len(toks)) + n_pre + n_suf)
        truncated.append(dropped)
    return Encoded(seqs, np.asarray(owner, np.int64), np.asarray(weight, np.float32), np.asarray(n_tokens, np.int32),
                   np.asarray(truncated, bool))


def head_tokens(tokenizer, texts: list[str], limit: int) -> list[list[int]]:
    """Content token ids (no special tokens) of each text: all of them when it has at most `limit`, else a
    prefix of at least `limit`, identical to the first tokens of the whole text. Only a head of a long
    text is tokenized: cut at whitespace (prep.cut_text, so every kept word and its tokens are whole) to
    limit x CHARS_PER_TOKEN characters, and cut again at twice the length while a head gives fewer than
    `limit` tokens, up to the whole text. The tokenizer thus reads at most about 2 x limit x CHARS_PER_TOKEN
    characters of ordinary prose, never the megabytes of a huge article that no kept window would use."""
    budget = limit * CHARS_PER_TOKEN
    heads = [cut_text(t, budget) for t in texts]
    out = tokenizer(heads, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    short = [i for i, (t, h) in enumerate(zip(texts, heads)) if len(h) < len(t) and len(out[i]) < limit]
    while short:
        budget *= 2
        heads = [cut_text(texts[i], budget) for i in short]
        ids = tokenizer(heads, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        for i, toks in zip(short, ids):
            out[i] = toks
        short = [i for i, h, toks in zip(short, heads, ids) if len(h) < len(texts[i]) and len(toks) < limit]
    return out


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic padding: right-pad to the longest row of this batch, not to max_length. Returns input_ids
    (B, T) and attention_mask (B, T), int64 CPU tensors (over NumPy memory, so they can be pinned)."""
    lengths = [len(r) for r in rows]
    width = max(lengths)
    ids = np.full((len(rows), width), pad_id, np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    for i, (r, n) in enumerate(zip(rows, lengths)):
        ids[i, :n] = r
        mask[i, :n] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)
