"""The scoring engine: windows, token-budget batches, OOM halving, calibration, chunk mode and int8."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hf_reference import plain_chunk_probs

from allsides_batch.config import ScoreConfig
from allsides_batch.errors import UserError
from allsides_batch.scoring.engine import Scorer, token_batches
from allsides_batch.text.windows import window_spans


def _scorer(model_dir, **kw) -> Scorer:
    base = {"model": str(model_dir), "input": ["unused"], "output": "unused", "max_length": 64, "device": "cpu",
            "batch_tokens": 256}
    base.update(kw)
    return Scorer.from_config(ScoreConfig(**base))


@pytest.fixture(scope="module")
def all_texts(articles_sample) -> list[str]:
    """The 600 sample articles (10 of each of 60 outlets, in outlet order), prepared as the scorer does."""
    from allsides_batch.text.prep import prepare_text

    return [prepare_text(r["title"], r["text"]) for r in pq.read_table(articles_sample).to_pylist()]


@pytest.fixture(scope="module")
def texts(all_texts) -> list[str]:
    return all_texts[:6]


@pytest.mark.parametrize("n,window,stride", [(0, 10, 3), (10, 10, 3), (11, 10, 3), (57, 10, 3), (100, 62, 0)])
def test_chunk_windows_cover_every_token_once_plus_overlap(n, window, stride):
    spans = window_spans(n, window, stride)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(0 < e - s <= window or n == 0 for s, e in spans)
    for (_, e1), (s2, _) in itertools.pairwise(spans):
        assert e1 - s2 == stride  # consecutive windows share exactly `stride` tokens
    assert sum(e - s for s, e in spans) == n + stride * (len(spans) - 1)


def test_token_batches_fill_the_budget_and_keep_every_index():
    lengths = np.array([5, 64, 12, 64, 30, 7, 64, 1])
    batches = token_batches(lengths, batch_tokens=128)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * lengths[b].max() <= 128
    assert [len(b) for b in batches][:2] == [2, 2]  # longest first: two 64s, then 64 + 30


class _OutOfMemoryAbove(torch.nn.Module):
    """The real model behind a memory limit: a batch of more than `rows` rows raises CUDA's out-of-memory
    error (the class the scorer catches) before running, as a GPU that holds `rows` rows would. It records
    the row count of every batch it is given and the ids of every row it ran."""

    def __init__(self, model, rows: int):
        super().__init__()
        self.inner, self.rows, self.sizes, self.ran = model, rows, [], []

    def forward(self, input_ids, attention_mask):
        self.sizes.append(input_ids.shape[0])
        if input_ids.shape[0] > self.rows:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.ran += [tuple(r[m.bool()].tolist()) for r, m in zip(input_ids, attention_mask)]
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_out_of_memory_halves_the_real_scorers_batch_and_later_batches_start_smaller(tiny_model_dir, all_texts):
    """The real Scorer over the real model, which runs out of memory above 2 rows. The budget (8 rows of
    64 tokens) is carried over: after the first batch's splits every later batch, in this call and the
    next, starts at 2 rows and never runs out of memory again."""
    texts = [t for t in all_texts if len(t) > 2000][:24]  # every one over 64 tokens: all windows 64 wide
    plain = _scorer(tiny_model_dir, batch_tokens=8 * 64)
    enc = plain.encode(texts)
    assert len(texts) == 24 and {len(s) for s in enc.seqs} == {64}
    expected = plain.predict(texts)

    scorer = _scorer(tiny_model_dir, batch_tokens=8 * 64)
    scorer.model = limited = _OutOfMemoryAbove(scorer.model, rows=2)
    first = scorer.predict(texts[:16])
    # 8 fails, its halves of 4 fail and their halves of 2 run; the other 8 rows are batched again by 2s.
    assert limited.sizes == [8, 4, 2, 2, 4, 2, 2] + [2] * 4
    assert scorer.halvings == 3 and scorer.batch_tokens == 2 * 64
    second = scorer.predict(texts[16:])  # the next unit starts from the carried-over budget
    assert limited.sizes[11:] == [2] * 4 and scorer.halvings == 3

    np.testing.assert_allclose(np.concatenate([first, second]), expected, atol=1e-6)  # each row in its place
    # nothing lost, nothing run twice: the rows that ran are the 24 windows, once each
    assert sorted(limited.ran) == sorted(tuple(s.tolist()) for s in enc.seqs)

    one = _scorer(tiny_model_dir)
    one.model = _OutOfMemoryAbove(one.model, rows=0)
    with pytest.raises(UserError, match="single article"):
        one.predict(texts[:3])


def test_predict_matches_plain_truncation_and_applies_temperature(tiny_model_dir, texts, tmp_path):
    from allsides_batch.models.hub import load_classifier, load_tokenizer

    scorer = _scorer(tiny_model_dir)
    probs, enc = scorer.predict_with_tokens(texts)
    model, tok = load_classifier(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir)
    with torch.inference_mode():
        logits = torch.cat([model(**tok(t, truncation=True, max_length=64, return_tensors="pt")).logits
                            for t in texts])
    np.testing.assert_allclose(probs, torch.softmax(logits, -1).numpy(), atol=2e-5)
    assert enc.n_tokens.tolist() == [64] * len(texts) and enc.truncated.all()

    calibrated = tmp_path / "calibrated"
    shutil.copytree(tiny_model_dir, calibrated)
    (calibrated / "calibration.json").write_text(json.dumps({"temperature": 2.5}))
    np.testing.assert_allclose(_scorer(calibrated).predict(texts), torch.softmax(logits / 2.5, -1).numpy(),
                               atol=2e-5)


def test_int8_is_refused_on_a_gpu_on_any_machine(tiny_model_dir):
    """Asked for a CUDA device, int8 is refused for being int8, whether or not this machine has a GPU."""
    for device in ("cuda", "cuda:1"):
        with pytest.raises(UserError, match="int8 is for CPU scoring"):
            _scorer(tiny_model_dir, quantize="int8", device=device)
    if not torch.cuda.is_available():  # auto is the CPU here: int8 runs
        assert _scorer(tiny_model_dir, quantize="int8", device="auto").device.type == "cpu"


@pytest.mark.slow
def test_chunk_mode_matches_a_plain_window_by_window_loop(fine_tuned_dir, texts, tmp_path):
    """The scorer's chunk mode (calibrated, so the temperature is on each window's logits) against
    hf_reference.plain_chunk_probs, on long real articles, a short one, an empty one and texts of exactly one
    window's worth of tokens and one token more; then with max_windows capping the long ones. The model
    is the fine-tuned one: the random tiny model gives every window the same probabilities to 1e-5, which
    would hide any weighting of the windows."""
    from allsides_batch.models.hub import load_tokenizer

    calibrated = tmp_path / "calibrated"
    shutil.copytree(fine_tuned_dir, calibrated)
    (calibrated / "calibration.json").write_text(json.dumps({"temperature": 0.5}))
    window, stride = 64 - 2, 16
    batch = [*texts[:3], "a short one", "", " ".join(["vote"] * window), " ".join(["vote"] * (window + 1))]

    scorer = _scorer(calibrated, long_text="chunk", stride=stride, batch_tokens=4096)
    probs, enc = scorer.predict_with_tokens(batch)
    expected, n_windows = plain_chunk_probs(calibrated, batch, 64, stride, 64, temperature=0.5)
    assert n_windows[3:] == [1, 1, 1, 2] and min(n_windows[:3]) > 5  # the real articles: many windows
    assert max(n_windows) < 64 and not enc.truncated.any()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    tok = load_tokenizer(str(calibrated))
    assert enc.n_tokens.tolist() == [len(tok(t)["input_ids"]) for t in batch]  # every token read once

    cap = 3
    capped, enc = _scorer(calibrated, long_text="chunk", stride=stride, max_windows=cap,
                          batch_tokens=4096).predict_with_tokens(batch)
    want, _ = plain_chunk_probs(calibrated, batch, 64, stride, cap, temperature=0.5)
    np.testing.assert_allclose(capped, want, atol=1e-5)
    assert enc.truncated.tolist() == [n > cap for n in n_windows]
    covered = window + (cap - 1) * (window - stride)
    long = np.array(n_windows) > cap
    assert (enc.n_tokens[long] == covered + 2).all()
    assert np.abs(capped[long] - probs[long]).max() > 1e-3  # the windows left out did count


@pytest.mark.slow
def test_int8_agrees_with_fp32_on_a_fine_tuned_model(fine_tuned_dir, all_texts):
    """Per-channel dynamic int8 against fp32 on 180 real articles (3 of each of the 60 outlets) scored by
    a fine-tuned model whose answers are spread over the three labels and not all certain. Measured:
    100% label agreement, mean |p_int8 - p_fp32| about 0.001, largest about 0.01. Bounds: 95% agreement
    (one scale per tensor, the scorer's int8 before per-channel scales, measured 96.9% on MiniLM) and a
    mean difference of 0.005; a label may only flip where fp32 itself nearly tied (margin < 0.05)."""
    texts = all_texts[7::10] + all_texts[8::10] + all_texts[9::10]
    fp32 = _scorer(fine_tuned_dir, batch_tokens=4096).predict(texts)
    q = _scorer(fine_tuned_dir, batch_tokens=4096, quantize="int8")
    assert any("quantized" in type(m).__module__ for m in q.model.modules())
    int8 = q.predict(texts)

    top2 = np.sort(fp32, 1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    labels = fp32.argmax(1)
    # not a vacuous comparison: all three labels, each on at least a tenth of the articles, and a tenth of
    # the answers within 0.4 of a tie
    assert len(texts) == 180 and np.bincount(labels, minlength=3).min() >= 18
    assert (margin < 0.4).mean() >= 0.1

    agree = (int8.argmax(1) == labels).mean()
    diff = np.abs(int8 - fp32)
    print(f"int8 vs fp32 on {len(texts)} articles: label agreement {agree:.4f}, mean |dp| {diff.mean():.5f}, "
          f"max |dp| {diff.max():.5f}, labels {np.bincount(labels, minlength=3).tolist()}, "
          f"margin quantiles 5/25/50% {np.quantile(margin, [0.05, 0.25, 0.5]).round(3).tolist()}")
    assert agree >= 0.95
    assert 0 < diff.mean() <= 0.005  # above 0: the int8 weights are in use
    assert (margin[int8.argmax(1) != labels] < 0.05).all()


def test_default_max_length_comes_from_the_training_recipe(tiny_model_dir, tmp_path):
    trained = tmp_path / "trained"
    shutil.copytree(tiny_model_dir, trained)
    (trained / "training_recipe.json").write_text(json.dumps({"max_length_used": 96}))
    assert _scorer(trained, max_length=None, batch_tokens=4096).max_length == 96
    # tokenizer limit, capped at 512
    assert _scorer(tiny_model_dir, max_length=None, batch_tokens=4096).max_length == 512
    with pytest.raises(UserError, match="exceeds"):
        _scorer(tiny_model_dir, max_length=1024, batch_tokens=4096)


def test_prepare_rows_hands_the_outlet_to_masking():
    from allsides_batch.scoring.engine import prepare_rows
    from allsides_batch.text.prep import TextPrep, prepare_text

    prep = TextPrep(mask_outlet=True)
    title, text, source = "Fox News poll", "WASHINGTON (Fox News) - Fox News reports the vote.", "Fox Online News"
    masked = prepare_rows(prep, [title], [text], [source])[0]
    assert masked == prepare_text(title, text, prep, source=source)
    assert "Fox News" not in masked and "Fox News" in prepare_text(title, text, prep)  # masking needs the outlet
    assert prepare_rows(TextPrep(), [title], [text], [source])[0] == prepare_text(title, text)
