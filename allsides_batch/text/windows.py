"""Several windows per article for long-text training, laid out exactly as the scorer's chunk mode:
windows of max_length tokens (special tokens included), consecutive windows sharing `stride`
content tokens, an article's probabilities averaged over its windows weighted by content tokens.

Training reads at most `max_windows` windows from the start of each article (articles average about
1,200 tokens, so 3 windows of 512 cover most of one); each window is a training example carrying the
article's label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .prep import CHARS_PER_TOKEN, cut_text, encode, special_token_layout, window_spans


@dataclass
class Windows:
    """Token sequences (M windows) of N articles: ids[m] belongs to article owner[m]."""

    ids: list[list[int]]   # M rows of token ids, special tokens included
    owner: np.ndarray      # (M,) int64 article index
    weight: np.ndarray     # (M,) float64 content tokens per window (the averaging weight)


def encode_windows(tokenizer, texts: list[str], max_length: int, stride: int, max_windows: int) -> Windows:
    """Up to `max_windows` windows per text. max_windows=1 gives text.encode's truncation exactly."""
    if max_windows == 1:
        ids, n_tok, _ = encode(tokenizer, texts, max_length)
        n_pre, n_suf = special_token_layout(tokenizer)
        weight = np.maximum(np.asarray(n_tok, dtype=np.float64) - n_pre - n_suf, 1.0)
        return Windows(ids=ids, owner=np.arange(len(ids), dtype=np.int64), weight=weight)
    n_pre, n_suf = special_token_layout(tokenizer)
    full = tokenizer("hello")["input_ids"]
    prefix, suffix = full[:n_pre], (full[len(full) - n_suf:] if n_suf else [])
    window = max_length - n_pre - n_suf
    needed = window + (max_windows - 1) * (window - stride) + 1  # content tokens the windows can use
    # Cut by characters first (only the head of a long article is needed); a cut that falls short of
    # the tokens needed is redone on the whole text, as text.encode does.
    budget = needed * CHARS_PER_TOKEN
    cut = [cut_text(t, budget) for t in texts]
    content = tokenizer(cut, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    for i, (t, c) in enumerate(zip(texts, cut)):
        if len(c) < len(t) and len(content[i]) < needed:
            content[i] = tokenizer(t, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    ids, owner, weight = [], [], []
    for row, toks in enumerate(content):
        for start, end in window_spans(len(toks), window, stride)[:max_windows]:
            ids.append(prefix + toks[start:end] + suffix)
            owner.append(row)
            weight.append(max(end - start, 1))  # an empty text still gets its one special-only window
    return Windows(ids=ids, owner=np.asarray(owner, dtype=np.int64), weight=np.asarray(weight, dtype=np.float64))
