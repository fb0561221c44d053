"""The scoring engine: windows, token-budget batches, OOM halving, calibration, chunk mode and int8."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from allsides_batch.config import ScoreConfig
from allsides_batch.errors import UserError
from allsides_batch.scoring.engine import Scorer, forward_with_halving, token_batches
from allsides_batch.text.windows import window_spans


def _scorer(model_dir, **kw) -> Scorer:
    base = {"model": str(model_dir), "input": ["unused"], "output": "unused", "max_length": 64, "device": "cpu",
            "batch_tokens": 256}
    base.update(kw)
    return Scorer.from_config(ScoreConfig(**base))


@pytest.fixture(scope="module")
def texts(articles_sample) -> list[str]:
    from allsides_batch.text.prep import prepare_text

    rows = pq.read_table(articles_sample).slice(0, 6).to_pylist()
    return [prepare_text(r["title"], r["text"]) for r in rows]


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


def test_forward_with_halving_splits_until_it_fits_and_loses_nothing():
    calls = []

    def forward(ids, mask):  # stands in for a GPU that holds at most two rows
        calls.append(ids.shape[0])
        if ids.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return ids.float().sum(1, keepdim=True) * mask[:, :1]

    ids = torch.arange(14).reshape(7, 2)
    halved = []
    out = forward_with_halving(forward, ids, torch.ones_like(ids), lambda: halved.append(1))
    torch.testing.assert_close(out, ids.float().sum(1, keepdim=True))
    assert max(c for c in calls if c <= 2) == 2 and len(halved) == 3

    def never(ids, mask):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(UserError, match="single article"):
        forward_with_halving(never, ids[:1], torch.ones_like(ids[:1]))


def test_predict_matches_plain_truncation_and_applies_temperature(tiny_model_dir, texts, tmp_path):
    from allsides_batch.model import load_classifier, load_tokenizer

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


def test_chunk_mode_averages_every_window_weighted_by_tokens(tiny_model_dir, texts):
    from allsides_batch.model import load_tokenizer

    scorer = _scorer(tiny_model_dir, long_text="chunk", stride=16)
    long_text = texts[0]  # about a thousand tokens: over a dozen windows
    probs, enc = scorer.predict_with_tokens([long_text, "a short one"])
    content = load_tokenizer(tiny_model_dir)(long_text, add_special_tokens=False)["input_ids"]
    assert enc.n_tokens[0] == len(content) + 2 and not enc.truncated.any()
    windows = [s for s, o in zip(enc.seqs, enc.owner) if o == 0]
    assert all(len(w) <= 64 for w in windows) and len(windows) > 5
    # Stitching the windows back (dropping [CLS]/[SEP] and each overlap) gives the whole text, once.
    stitched = list(windows[0][1:-1])
    for w in windows[1:]:
        assert list(w[1:17]) == stitched[-16:]
        stitched += list(w[17:-1])
    assert stitched == content
    per_window = scorer.sequence_probs(windows)
    weights = np.array([len(w) - 2 for w in windows], float)
    np.testing.assert_allclose(probs[0], (per_window * weights[:, None]).sum(0) / weights.sum(), atol=1e-5)
    np.testing.assert_allclose(probs[1], scorer.sequence_probs([enc.seqs[-1]])[0], atol=1e-6)


def test_int8_scores_on_cpu_and_is_refused_elsewhere(tiny_model_dir, texts):
    q = _scorer(tiny_model_dir, quantize="int8")
    assert any("quantized" in type(m).__module__ for m in q.model.modules())
    probs = q.predict(texts)
    assert probs.shape == (len(texts), 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            _scorer(tiny_model_dir, quantize="int8", device="cuda")


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
