"""Text preparation and the character-cut tokenization shared by train and score."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from allsides_batch.text.prep import TextPrep, encode, prepare_text, special_token_layout


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    return AutoTokenizer.from_pretrained(minilm_path)


def test_title_prepended_once():
    assert prepare_text("Headline", "Body text.") == "Headline\n\nBody text."
    # crawled bodies often repeat the headline as their first line
    assert prepare_text("Headline", "Headline\n\nBody text.") == "Headline\n\nBody text."
    assert prepare_text(None, "  Body \r\n\r\n\r\n more  ") == "Body\n\nmore"
    assert prepare_text("Headline", "Body", TextPrep(prepend_title=False)) == "Body"


def test_text_prep_round_trips(tmp_path):
    prep = TextPrep(separator=" | ")
    prep.save(str(tmp_path))
    assert TextPrep.load(str(tmp_path)) == prep
    assert TextPrep.load(str(tmp_path / "missing")) == TextPrep()


def test_special_token_layout(tokenizer):
    assert special_token_layout(tokenizer) == (1, 1)  # [CLS] … [SEP]


@pytest.mark.slow
@pytest.mark.parametrize("max_length", [8, 64, 512])
def test_encode_equals_plain_truncation_on_real_articles(tokenizer, articles_path, max_length):
    rows = pq.read_table(articles_path, columns=["title", "text"]).slice(0, 200).to_pylist()
    texts = [prepare_text(r["title"], r["text"]) for r in rows]
    # a text that needs many characters per token: the character cut alone would lose tokens
    texts.append("a " + "x" * 9000)
    ids, n_tokens, truncated = encode(tokenizer, texts, max_length)
    reference = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    assert ids == reference
    assert n_tokens == [len(r) for r in reference]
    full = tokenizer(texts)["input_ids"]
    assert truncated == [len(f) > max_length for f in full]
