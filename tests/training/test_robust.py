"""Gradient reversal, the outlet adversary, class balancing; a short adversarial run on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from allsides_batch.training.robust import (
    OutletAdversary,
    balanced_order,
    class_weights,
    outlet_index,
    reverse_gradient,
    sentence_features,
)


def test_gradient_reversal_flips_and_scales_the_gradient():
    x = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(8)
    (x * w).sum().backward()
    plain = x.grad.clone()
    x.grad = None
    y = reverse_gradient(x, 0.5)
    assert torch.equal(y, x)  # identity on the way forward
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.5 * plain)


def test_adversary_head_learns_while_encoder_gets_the_reversed_gradient():
    torch.manual_seed(0)
    features = torch.randn(16, 32, requires_grad=True)
    targets = torch.randint(0, 5, (16,))
    adv = OutletAdversary(32, 5, weight=1.0, dropout=0.0)
    loss = torch.nn.functional.cross_entropy(adv(features), targets)
    loss.backward()
    reversed_grad = features.grad.clone()
    head_grad = [p.grad.clone() for p in adv.parameters()]
    # the same head without reversal: the head's gradients agree, the features' are opposite
    features.grad = None
    adv.zero_grad()
    torch.nn.functional.cross_entropy(adv.net(features), targets).backward()
    assert torch.allclose(features.grad, -reversed_grad, atol=1e-6)
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(head_grad, adv.parameters()))


def test_class_weights_and_balanced_order():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    w = class_weights(labels, 3)
    assert np.allclose(w, [100 / 180, 100 / 90, 100 / 30])
    assert w[labels].mean() == pytest.approx(1.0)
    assert class_weights(np.array([0, 0, 2]), 3)[1] == 0.0
    order = balanced_order(labels, 3, torch.Generator().manual_seed(0))
    counts = np.bincount(labels[order], minlength=3)
    assert len(order) == len(labels) and counts.min() > 20  # ≈ 33 each, not 60/30/10


def test_outlet_index_is_stable():
    ids, names = outlet_index(["b", "a", "b", "c"])
    assert names == ["a", "b", "c"] and ids.tolist() == [1, 0, 1, 2]


def test_sentence_features_is_the_cls_position(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    out = model(input_ids=torch.tensor([[101, 2023, 2003, 102]]), output_hidden_states=True)
    feats = sentence_features(out)
    assert feats.shape == (1, model.config.hidden_size if hasattr(model.config, "hidden_size") else 32)
    assert torch.equal(feats, out.hidden_states[-1][:, 0])


@pytest.mark.slow
def test_training_with_adversary_sampler_and_windows(tiny_model_dir, articles_sample, tmp_path):
    """The recipe options run together end to end and are recorded; the adversary's loss is logged."""
    from allsides_batch.config import TrainConfig
    from allsides_batch.training.train import train_model

    cfg = TrainConfig(kind="transformer", data=[str(articles_sample)], output=str(tmp_path / "m"),
                      base_model=tiny_model_dir, epochs=2, max_length=32, window_stride=8, train_windows=2,
                      adversary_weight=0.5, class_balance="sampler", max_train_samples=120, max_eval_samples=60,
                      train_batch_size=16, val_fraction=0.2, device="cpu", calibrate=True)
    result = train_model(cfg)
    epochs = result.metrics["epochs"]
    assert len(epochs) == 2 and all(np.isfinite(e["adversary_loss"]) for e in epochs)
    assert (tmp_path / "m" / "calibration.json").is_file()
    assert result.metrics["calibration"]["nll_after"] <= result.metrics["calibration"]["nll_before"]
    # the adversary head is training-only: the saved model is a plain sequence classifier
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as fh:
        assert not any("adversary" in k or k.startswith("net.") for k in fh.keys())
