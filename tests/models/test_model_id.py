"""The model_id written with every score (scoring.plan.score_id over model.model_id) changes exactly when
the scores can: with the max length, truncate vs chunk, the chunk stride, int8 and the calibration; not
with the batch size, the progress bar, the workers, the run id, the int8 check or, in truncate mode, the
stride. Each pair of settings is scored too, so the test holds the id to the scores, both ways.
(max_windows and the label map have their own tests: scoring/test_refusals_and_limits.py and
scoring/test_run.py.)"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from allsides_batch.config import ScoreConfig
from allsides_batch.scoring import plan
from allsides_batch.scoring.engine import Scorer

# Each case scores both settings with a real model: seconds in all.
pytestmark = pytest.mark.slow

MAXLEN = 64


@pytest.fixture(scope="module")
def sensitive_dir(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny DistilBERT's shape and tokenizer, initialised at std 0.2 instead of 0.02: still random, but
    its answers move with the text by about 1e-2, where the conftest model's stay within 1e-5 of one
    another, too close to batch-size rounding (1e-7) to tell a setting that matters from one that does not."""
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    from allsides_batch.models.identity import ID2LABEL, LABEL2ID

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                              max_position_embeddings=512, num_labels=3, id2label=ID2LABEL, label2id=LABEL2ID,
                              initializer_range=0.2)
    out = tmp_path_factory.mktemp("sensitive")
    DistilBertForSequenceClassification(config).save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def calibrated(sensitive_dir, tmp_path_factory) -> dict[float, str]:
    """The same model with a calibration file: temperature 2.5 and 1.5."""
    out = {}
    for t in (2.5, 1.5):
        d = tmp_path_factory.mktemp(f"calibrated-{t}") / "model"
        shutil.copytree(sensitive_dir, d)
        (d / "calibration.json").write_text(json.dumps({"temperature": t}))
        out[t] = str(d)
    return out


@pytest.fixture(scope="module")
def small(articles_sample, tmp_path_factory):
    """Three real articles, two of them over a thousand tokens: the input plan() reads."""
    path = tmp_path_factory.mktemp("small") / "small.parquet"
    pq.write_table(pq.read_table(articles_sample).slice(0, 3), path)
    return path


@pytest.fixture(scope="module")
def texts(small) -> list[str]:
    from allsides_batch.text.prep import prepare_text

    return [prepare_text(r["title"], r["text"]) for r in pq.read_table(small).to_pylist()]


CHUNK = {"long_text": "chunk", "stride": 16}
# (what is compared, settings A, settings B, model A, model B, whether scores and id must change)
CASES = [
    ("max_length", {"max_length": 64}, {"max_length": 32}, None, None, True),
    ("chunk vs truncate", {}, CHUNK, None, None, True),
    ("stride in chunk mode", CHUNK, {**CHUNK, "stride": 8}, None, None, True),
    ("int8", {}, {"quantize": "int8"}, None, None, True),
    ("calibration file added", {}, {}, None, 2.5, True),
    ("temperature changed", {}, {}, 2.5, 1.5, True),
    ("batch_tokens", {"batch_tokens": 64}, {"batch_tokens": 4096}, None, None, False),
    ("batch_tokens in chunk mode", CHUNK, {**CHUNK, "batch_tokens": 192}, None, None, False),
    ("progress, workers, run id", {}, {"progress": True, "workers": 2, "run_id": "other"}, None, None, False),
    ("int8 check size", {"quantize": "int8"}, {"quantize": "int8", "quantize_check": 0}, None, None, False),
    ("stride in truncate mode", {"stride": 16}, {"stride": 8}, None, None, False),
    ("device auto on this CPU", {}, {"device": "auto"}, None, None, False),
]


@pytest.mark.parametrize("what,a,b,model_a,model_b,changes", CASES, ids=[c[0] for c in CASES])
def test_score_id_changes_exactly_with_the_settings_that_change_scores(
        what, a, b, model_a, model_b, changes, sensitive_dir, calibrated, small, texts, tmp_path):
    import torch

    if b.get("device") == "auto" and torch.cuda.is_available():
        pytest.skip("auto is a GPU here: another device, other kernels")
    ids, probs = [], []
    for i, (settings, temperature) in enumerate([(a, model_a), (b, model_b)]):
        model = calibrated[temperature] if temperature else sensitive_dir
        base = {"model": model, "input": [str(small)], "output": str(tmp_path / f"out{i}"), "max_length": MAXLEN,
                "device": "cpu", "progress": False, "batch_tokens": 4096, "workers": 0}
        cfg = ScoreConfig(**{**base, **settings})
        ids.append(plan(cfg).score_id)  # the id score_corpus writes, from the model's files and cfg
        probs.append(Scorer.from_config(cfg).predict(texts))
    moved = float(np.abs(probs[0] - probs[1]).max())
    assert (moved > 1e-4) == changes, f"{what}: scores moved by {moved}"
    assert (ids[0] != ids[1]) == changes, f"{what}: ids {ids}"
