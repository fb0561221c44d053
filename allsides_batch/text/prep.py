"""Text preparation shared by training and scoring: the same function on both sides.

A model directory stores its TextPrep as text_preparation.json; the scorer reads it back, so an
article is turned into model input exactly as it was during training.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from typing import Any

from ..models.files import TEXT_PREP_FILE, read_model_json

# WordPiece on English news averages about 5 characters per token; 8 leaves room for short words,
# numbers and punctuation. encode() falls back to the whole text when the cut was too short.
CHARS_PER_TOKEN = 8

_WS = re.compile(r"[ \t\u00a0]+")
_SPACED_NEWLINE = re.compile(r" ?\n ?")
_BLANK_LINES = re.compile(r"\n\s*\n+")


@dataclass(frozen=True)
class TextPrep:
    """How an article (title, body) becomes one model input string."""

    version: int = 1
    prepend_title: bool = True
    separator: str = "\n\n"
    # Outlet-identity masking (allsides_batch/text/masking.py). Off by default so model directories saved
    # before masking existed load with the preparation they were trained with.
    mask_outlet: bool = False
    mask_version: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> TextPrep:
        known = {k: v for k, v in obj.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def save(self, model_dir: str) -> None:
        with open(os.path.join(model_dir, TEXT_PREP_FILE), "w") as fh:
            fh.write(self.to_json() + "\n")

    @classmethod
    def load(cls, model_dir: str) -> TextPrep:
        """The TextPrep saved with a model; the default for checkpoints trained elsewhere."""
        path = os.path.join(model_dir, TEXT_PREP_FILE)
        if not os.path.isfile(path):
            return cls()
        return cls.from_dict(read_model_json(path))


def normalise_whitespace(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACED_NEWLINE.sub("\n", _WS.sub(" ", text))
    return _BLANK_LINES.sub("\n\n", text).strip()


def prepare_text(title: str | None, text: str, prep: TextPrep = TextPrep(), source: str | None = None) -> str:
    """One article → one model input string. The title is prepended unless the body already starts
    with it (many crawled bodies repeat the headline as their first line). With prep.mask_outlet the
    outlet's identity (its name and aliases given `source`, datelines, bylines, URLs, boilerplate) is
    removed from both, identically in training and scoring."""
    body = normalise_whitespace(text)
    if prep.mask_outlet:
        from .masking import mask_outlet_identity

        body = mask_outlet_identity(body, source)
        title = mask_outlet_identity(normalise_whitespace(title), source) if title else title
    if prep.prepend_title and title:
        head = normalise_whitespace(title)
        if head and not body.lower().startswith(head.lower()):
            return f"{head}{prep.separator}{body}" if body else head
    return body


def char_budget(max_length: int) -> int:
    """Characters to keep before tokenizing when only the first `max_length` tokens are needed."""
    return max_length * CHARS_PER_TOKEN


def cut_text(text: str, budget: int) -> str:
    """The text's first whole words within `budget` characters. Cutting at whitespace keeps every
    kept word whole, so its tokens are those of the full text; a text with no whitespace in the
    budget is kept whole."""
    if len(text) <= budget:
        return text
    end = max(text.rfind(" ", 0, budget + 1), text.rfind("\n", 0, budget + 1))
    return text[:end] if end > 0 else text


def window_spans(n_content: int, window: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) spans of at most `window` content tokens covering 0..n_content, consecutive spans
    sharing exactly `stride` tokens: every token is covered once, plus the overlaps. The scorer's chunk
    mode and windowed training both lay windows out with this."""
    if n_content <= window:
        return [(0, n_content)]
    spans, start = [], 0
    while True:
        end = min(start + window, n_content)
        spans.append((start, end))
        if end == n_content:
            return spans
        start = end - stride


def special_token_layout(tokenizer) -> tuple[int, int]:
    """(tokens the tokenizer adds before the text, tokens it adds after), e.g. (1, 1) for [CLS] … [SEP]."""
    bare = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return start, len(full) - start - len(bare)
    return 0, len(full) - len(bare)


def encode(tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], list[int], list[bool]]:
    """Tokenize as `truncation=True, max_length=max_length` would, but faster on long texts.

    Returns (input ids with special tokens, token count kept, truncated flag per text). Texts are cut
    by characters before tokenizing (a 6,000-character article needs only its first ~2,500 for 512
    tokens); a cut text that then falls short of max_length is tokenized again whole, so the ids are
    always exactly those of plain truncation. One extra token is asked for to learn whether the text
    was truncated without tokenizing all of it.
    """
    budget = char_budget(max_length)
    n_prefix, n_suffix = special_token_layout(tokenizer)
    cut = [cut_text(t, budget) for t in texts]
    ids: list[list[int]] = tokenizer(cut, truncation=True, max_length=max_length + 1,
                                     return_attention_mask=False)["input_ids"]
    redo = [i for i, (t, c) in enumerate(zip(texts, cut)) if len(c) < len(t) and len(ids[i]) <= max_length]
    if redo:
        again = tokenizer([texts[i] for i in redo], truncation=True, max_length=max_length + 1,
                          return_attention_mask=False)["input_ids"]
        for i, row in zip(redo, again):
            ids[i] = row
    truncated = [len(row) > max_length for row in ids]
    out = []
    for row, over in zip(ids, truncated):
        if over:  # drop the one extra content token, keep the closing special tokens
            end = len(row) - n_suffix
            row = row[: end - 1] + row[end:]
        out.append(row)
    return out, [len(r) for r in out], truncated
