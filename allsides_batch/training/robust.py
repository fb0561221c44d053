"""Outlet-robust training pieces: gradient reversal, the outlet adversary head, class balancing.

Adversarial outlet adaptation (Ganin & Lempitsky 2015, applied to media by Baly et al. 2020): a
small head predicts the article's outlet from the encoder's representation through a gradient
reversal layer. The head learns to recognise the outlet; the reversed gradient pushes the encoder
to make that impossible, so features that only identify the house style are penalised while the
label loss keeps the ones that carry the slant. The head is used in training only and is not saved.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class _ReverseGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by −weight."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """x unchanged on the way forward; its gradient flipped and scaled by `weight` on the way back."""
    return _ReverseGrad.apply(x, weight)


class OutletAdversary(nn.Module):
    """Predicts the outlet (one of `n_outlets` training outlets) from a (B, H) representation."""

    def __init__(self, hidden_size: int, n_outlets: int, weight: float, dropout: float = 0.1):
        super().__init__()
        self.weight = weight
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, hidden_size), nn.GELU(),
                                 nn.Linear(hidden_size, n_outlets))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, H) encoder features → (B, n_outlets) outlet logits, gradient reversed into the encoder."""
        return self.net(reverse_gradient(features, self.weight))


def sentence_features(outputs) -> torch.Tensor:
    """The representation the classifier head reads: the first ([CLS]) position of the last hidden
    layer, (B, T, H) → (B, H). Needs the model called with output_hidden_states=True."""
    return outputs.hidden_states[-1][:, 0]


def outlet_index(sources: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Outlet ids (N,) for the adversary's targets, and the outlet names in id order."""
    names = sorted(set(sources))
    lookup = {name: i for i, name in enumerate(names)}
    return np.array([lookup[s] for s in sources], dtype=np.int64), names


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights (C,), mean 1 over the training rows: n / (C · count_c).
    A class absent from training gets weight 0 (it has no rows to weigh)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(np.float64)
    weights = np.divide(len(labels), n_classes * counts, out=np.zeros(n_classes), where=counts > 0)
    return weights


def balanced_order(labels: np.ndarray, n_classes: int, generator: torch.Generator) -> list[int]:
    """One epoch's row order drawn with replacement so every class is equally likely: same length as
    the data, so an epoch is still one pass's worth of steps."""
    weights = class_weights(labels, n_classes)[np.asarray(labels, dtype=np.int64)]
    w = torch.as_tensor(weights, dtype=torch.double)
    return torch.multinomial(w, num_samples=len(labels), replacement=True, generator=generator).tolist()
