"""Several windows per article, laid out as the scorer's chunk mode."""

from __future__ import annotations

import pytest

from allsides_batch.model import load_tokenizer
from allsides_batch.text.prep import encode
from allsides_batch.text.windows import encode_windows, window_spans


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    return load_tokenizer(minilm_path)


@pytest.mark.parametrize("n, window, stride", [(5, 10, 2), (10, 10, 2), (11, 10, 2), (100, 30, 10), (77, 16, 0)])
def test_spans_cover_the_text_with_exact_overlap(n, window, stride):
    spans = window_spans(n, window, stride)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(e - s <= window for s, e in spans)
    assert all(a[1] - b[0] == stride for a, b in zip(spans, spans[1:]))


def test_spans_match_the_scorer_chunk_mode():
    score_engine = pytest.importorskip("allsides_batch.scoring.engine")
    for n in (0, 3, 62, 63, 200, 1000):
        assert window_spans(n, 62, 16) == score_engine.chunk_windows(n, 62, 16)


def test_one_window_is_plain_truncation(tokenizer, articles_sample):
    import pyarrow.parquet as pq

    texts = pq.read_table(articles_sample, columns=["text"])["text"].to_pylist()[:20]
    w = encode_windows(tokenizer, texts, 64, 16, 1)
    assert w.ids == encode(tokenizer, texts, 64)[0] and w.owner.tolist() == list(range(20))


def test_windows_are_consecutive_slices_of_the_article(tokenizer, articles_sample):
    import pyarrow.parquet as pq

    texts = pq.read_table(articles_sample, columns=["text"])["text"].to_pylist()[:10]
    w = encode_windows(tokenizer, texts, 32, 8, 3)
    for row, text in enumerate(texts):
        full = tokenizer(text, add_special_tokens=False)["input_ids"]
        mine = [ids for ids, o in zip(w.ids, w.owner) if o == row]
        assert 1 <= len(mine) <= 3
        for k, ids in enumerate(mine):
            assert len(ids) <= 32 and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
            assert ids[1:-1] == full[k * 22:k * 22 + 30]  # window 30 content tokens, step 30 - 8
        assert w.weight[w.owner == row].tolist() == [len(ids) - 2 for ids in mine]
