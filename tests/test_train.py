"""The training loop: dynamic padding, determinism, best checkpoint, output directory; and one
integration run fine-tuning the real pretrained MiniLM on real articles."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from allsides_batch.config import TrainConfig
from allsides_batch.metrics import classification_report
from allsides_batch.text.prep import TextPrep, encode
from allsides_batch.training.data import load_labelled, make_split
from allsides_batch.training.train import pad_batch, predict_logits, train_model


def test_pad_batch_pads_to_longest_row_not_max_length():
    ids, mask = pad_batch([[101, 7, 102], [101, 102]], pad_id=0)
    assert ids.tolist() == [[101, 7, 102], [101, 102, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def _tiny_cfg(data, model, out, **kw) -> TrainConfig:
    base = dict(kind="transformer", data=[str(data)], base_model=model, output=str(out), max_length=32, epochs=2,
                train_batch_size=16, eval_batch_size=64, learning_rate=1e-3, warmup_steps=2, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_same_seed_same_model(articles_sample, tiny_model_dir, tmp_path):
    a = train_model(_tiny_cfg(articles_sample, tiny_model_dir, tmp_path / "a", max_steps=6))
    b = train_model(_tiny_cfg(articles_sample, tiny_model_dir, tmp_path / "b", max_steps=6))
    assert [e["train_loss"] for e in a.metrics["epochs"]] == [e["train_loss"] for e in b.metrics["epochs"]]
    from safetensors.torch import load_file

    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_output_directory_is_complete(articles_sample, tiny_model_dir, tmp_path):
    out = tmp_path / "model"
    result = train_model(_tiny_cfg(articles_sample, tiny_model_dir, out, epochs=3, early_stopping=0,
                                   test=[str(articles_sample)]))
    names = set(os.listdir(out))
    assert {"model.safetensors", "config.json", "tokenizer.json", "training_recipe.json", "metrics.json",
            "README.md", "text_preparation.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "left", "1": "center", "2": "right"}
    recipe = json.loads((out / "training_recipe.json").read_text())
    assert recipe["config"]["learning_rate"] == 1e-3 and recipe["config"]["seed"] == 12345
    assert recipe["data_files"][0]["sha256"] and recipe["split_sizes"]["outlets_in_both"] == 0
    assert {"torch", "transformers"} <= set(recipe["package_versions"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert [round(e["epoch"]) for e in metrics["epochs"]] == [1, 2, 3]
    best = max(metrics["epochs"], key=lambda e: e["macro_f1"])
    assert metrics["best_epoch"] == best["epoch"]  # the best epoch is kept, not the last
    assert metrics["validation"]["macro_f1"] == pytest.approx(best["macro_f1"])
    assert set(metrics["epochs"][0]["per_class_f1"]) == {"left", "center", "right"}
    assert metrics["test"]["n"] == 600
    card = (out / "README.md").read_text()
    assert "| Training Loss | Epoch | Step | Validation Loss | Accuracy |" in card
    assert result.output_dir == str(out)
    assert not [p for p in os.listdir(tmp_path) if ".partial-" in p]


def test_early_stopping_stops(articles_sample, tiny_model_dir, tmp_path):
    # lr 0 never improves after the first epoch, so training stops after 1 + early_stopping epochs
    result = train_model(_tiny_cfg(articles_sample, tiny_model_dir, tmp_path / "m", epochs=10,
                                   early_stopping=2, learning_rate=1e-12))
    assert len(result.metrics["epochs"]) == 3


@pytest.mark.slow
def test_fine_tunes_real_minilm_loss_falls_and_reload_predicts_identically(articles_path, minilm_path, tmp_path):
    out = tmp_path / "minilm"
    cfg = TrainConfig(kind="transformer", data=[str(articles_path)], base_model=minilm_path, output=str(out),
                      max_length=64, epochs=3, early_stopping=0, train_batch_size=16, learning_rate=1e-4,
                      max_train_samples=320, max_eval_samples=96, device="cpu")
    result = train_model(cfg)
    losses = [e["train_loss"] for e in result.metrics["epochs"]]
    assert losses[-1] < losses[0], losses

    # Reload from disk as any user would and predict the same validation rows again.
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    data = load_labelled(cfg.data, cfg.columns, prep=TextPrep.load(str(out)), fingerprint=False)
    _, val = make_split(data, cfg.split, cfg.val_fraction, cfg.seed)
    val = np.sort(np.random.default_rng(cfg.seed).choice(val, size=96, replace=False))
    ids, _, _ = encode(tokenizer, [data.texts[i] for i in val], 64)
    logits = predict_logits(model, ids, 32, tokenizer.pad_token_id, torch.device("cpu"), torch.float32)
    temperature = result.metrics["validation"]["temperature"]  # 1.0 unless --calibrate fitted one
    probs = torch.softmax(torch.from_numpy(logits) / temperature, dim=-1).numpy()
    again = classification_report(data.labels[val], probs)
    saved = result.metrics["validation"]
    assert again["accuracy"] == saved["accuracy"]
    assert again["log_loss"] == pytest.approx(saved["log_loss"], abs=1e-5)
