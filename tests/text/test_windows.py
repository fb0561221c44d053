"""Several windows per article, for training and the scorer alike."""

from __future__ import annotations

import pytest

from allsides_batch.models.hub import load_tokenizer
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


def test_the_scorer_reads_the_windows_training_reads(tokenizer, articles_sample):
    import pyarrow.parquet as pq

    from allsides_batch.scoring.engine import EncodeSpec, encode_texts
    from allsides_batch.text.prep import TextPrep

    texts = pq.read_table(articles_sample, columns=["text"])["text"].to_pylist()[:10] + ["", "short"]
    for mode, cap in (("truncate", 1), ("chunk", 3), ("chunk", 1)):
        scored = encode_texts(tokenizer, texts, EncodeSpec(None, TextPrep(), 32, mode, 8, None, cap))
        trained = encode_windows(tokenizer, texts, 32, 8, cap)
        assert [s.tolist() for s in scored.seqs] == trained.seqs
        assert scored.owner.tolist() == trained.owner.tolist() and scored.weight.tolist() == trained.weight.tolist()
        assert scored.n_tokens.tolist() == trained.n_tokens.tolist()
        assert scored.truncated.tolist() == trained.truncated.tolist()


def test_one_window_is_plain_truncation(tokenizer, articles_sample):
    import pyarrow.parquet as pq

    texts = pq.read_table(articles_sample, columns=["text"])["text"].to_pylist()[:20]
    w = encode_windows(tokenizer, texts, 64, 16, 1)
    assert w.seqs == encode(tokenizer, texts, 64)[0] and w.owner.tolist() == list(range(20))


def test_windows_are_consecutive_slices_of_the_article(tokenizer, articles_sample):
    import pyarrow.parquet as pq

    texts = pq.read_table(articles_sample, columns=["text"])["text"].to_pylist()[:10]
    w = encode_windows(tokenizer, texts, 32, 8, 3)
    for row, text in enumerate(texts):
        full = tokenizer(text, add_special_tokens=False)["input_ids"]
        mine = [ids for ids, o in zip(w.seqs, w.owner) if o == row]
        assert 1 <= len(mine) <= 3
        for k, ids in enumerate(mine):
            assert len(ids) <= 32 and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
            assert ids[1:-1] == full[k * 22:k * 22 + 30]  # window 30 content tokens, step 30 - 8
        assert w.weight[w.owner == row].tolist() == [len(ids) - 2 for ids in mine]
