"""The transformer + linear ensemble: weights fitted on validation, one model directory that the
scorer loads like any other, scores equal to the members combined by hand."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from allsides_batch.config import ScoreConfig, TrainConfig
from allsides_batch.training.ensemble import combine, fit_weights
from allsides_batch.training.train import train_model


def test_fit_weights_drops_a_member_that_carries_no_signal():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 3000)
    # an informative member: the right label's logit is shifted by 1.5 (unit Gaussian noise), so the Bayes
    # posterior is softmax(1.5 · z): the optimal weight on softmax(z) is 1.5. A member of pure noise.
    informative = rng.normal(size=(3000, 3)) + 1.5 * np.eye(3)[labels]
    noise = rng.normal(size=(3000, 3))

    def probs(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    w = fit_weights({"transformer": probs(noise), "linear": probs(informative)}, labels)
    assert w["transformer"] < 0.05 and 1.35 < w["linear"] < 1.65


def test_fit_weights_lowers_log_loss_below_either_member():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 4000)
    signal = np.eye(3)[labels]
    a = rng.normal(size=(4000, 3)) + signal      # two members with independent errors
    b = rng.normal(size=(4000, 3)) + signal

    def probs(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def nll(p):
        return -np.log(p[np.arange(len(labels)), labels]).mean()

    members = {"transformer": probs(a), "linear": probs(b)}
    w = fit_weights(members, labels)
    assert nll(combine(members, w)) < min(nll(members["transformer"]), nll(members["linear"])) - 0.02


@pytest.mark.slow
def test_ensemble_trains_saves_and_scores_as_its_members_combined(articles_sample, tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from allsides_batch.models.calibration import softmax
    from allsides_batch.models.identity import model_id
    from allsides_batch.models.linear import LinearModel
    from allsides_batch.scoring import score_corpus
    from allsides_batch.text.prep import TextPrep, prepare_text

    out = tmp_path / "ens"
    train_model(TrainConfig(kind="ensemble", data=[str(articles_sample)], base_model=tiny_model_dir,
                            output=str(out), max_length=32, epochs=1, train_batch_size=16, learning_rate=1e-3,
                            warmup_steps=2, device="cpu", val_fraction=0.2, linear_min_df=1))
    info = json.loads((out / "allsides_model.json").read_text())
    assert info["kind"] == "ensemble" and set(info["weights"]) == {"transformer", "linear"}
    assert {"transformer", "linear", "metrics.json", "README.md"} <= set(os.listdir(out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["members"]) == {"transformer", "linear"}

    inp = tmp_path / "in.parquet"
    table = pq.read_table(articles_sample).slice(0, 60)
    pq.write_table(table, inp)
    summary = score_corpus(ScoreConfig(model=str(out), input=[str(inp)], output=str(tmp_path / "scores"),
                                       device="cpu", progress=False, workers=0))
    assert summary.scored_rows == 60
    scores = pq.read_table(summary.parts[0]).to_pydict()

    # the members applied by hand: the transformer through transformers itself, the linear model directly
    rows = table.to_pydict()
    prep = TextPrep.load(str(out))
    texts = [prepare_text(t, x, prep, source=s) for t, x, s in zip(rows["title"], rows["text"], rows["source"])]
    tok = AutoTokenizer.from_pretrained(out / "transformer")
    hf = AutoModelForSequenceClassification.from_pretrained(out / "transformer").eval()
    with torch.no_grad():
        enc = tok(texts, truncation=True, max_length=32, padding=True, return_tensors="pt")
        p_t = torch.softmax(hf(**enc).logits, -1).numpy()
    p_l = softmax(LinearModel.load(str(out / "linear")).logits(texts))
    expected = combine({"transformer": p_t, "linear": p_l}, info["weights"])
    order = {i: k for k, i in enumerate(rows["id"])}
    got = np.stack([scores["p_left"], scores["p_center"], scores["p_right"]], axis=1)
    np.testing.assert_allclose(got, expected[[order[i] for i in scores["id"]]], atol=1e-4)
    # the id covers both members: changing the linear half changes it
    before = model_id(str(out))
    w = (out / "linear" / "linear.safetensors").read_bytes()
    (out / "linear" / "linear.safetensors").write_bytes(w[:-1] + bytes([w[-1] ^ 1]))
    assert model_id(str(out)) != before
