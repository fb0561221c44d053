"""The model card (README.md in a model directory) and the provenance recorded beside a model."""

from __future__ import annotations

import os
import platform
import subprocess

from .. import LABELS, __version__
from ..config import TrainConfig


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(__file__), capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version(), "allsides_batch": __version__}
    for pkg in ("torch", "transformers", "tokenizers", "numpy", "pyarrow", "safetensors", "accelerate", "scikit-learn"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return versions


def term_lines(terms: dict[str, list[tuple[str, float]]] | None) -> list[str]:
    """The card's section on the n-grams with the largest weights on the bias logit (linear models)."""
    if not terms:
        return []
    lines = ["", "## Terms that push hardest", "",
             "The n-grams with the largest weights on the bias logit (logit_right − logit_left) of the linear "
             "model: each occurrence moves an article that way, scaled by its TF-IDF value. `allsides-batch "
             "explain` gives one article's or one outlet's own contributions.", "",
             "| pushes right | weight | pushes left | weight |", "| --- | ---: | --- | ---: |"]
    for (rt, rw), (lt, lw) in zip(terms["right"], terms["left"]):
        lines.append(f"| `{rt}` | {rw:+.3f} | `{lt}` | {lw:+.3f} |")
    return lines


def _what(cfg: TrainConfig, metrics: dict) -> str:
    """The card's first words: what the model is, by kind."""
    if cfg.kind == "transformer":
        return f"Fine-tuned from `{cfg.base_model}`"
    if cfg.kind == "linear":
        return (f"TF-IDF (word 1-{cfg.linear_ngram_max}-grams of the whole article, sublinear tf) + logistic "
                "regression")
    weights = ", ".join(f"{m} {w:.3f}" for m, w in (metrics.get("ensemble_weights") or {}).items())
    return (f"An ensemble of `{cfg.base_model}` fine-tuned and the full-text TF-IDF + logistic regression model, "
            f"weights {weights} (fitted on validation),")


def _header_lines(cfg: TrainConfig, recipe: dict, metrics: dict) -> list[str]:
    """Front matter, title, what the model is and which epoch was kept."""
    sizes = recipe["split_sizes"]
    return [
        "---", f"library_name: {'transformers' if cfg.kind == 'transformer' else 'allsides-batch'}",
        "pipeline_tag: text-classification", "tags: [political-bias, allsides]",
        "---", "", f"# {os.path.basename(os.path.abspath(cfg.output))}", "",
        f"{_what(cfg, metrics)} to label news articles {', '.join(LABELS)}, by allsides-batch {__version__} "
        f"(model kind `{cfg.kind}`; `allsides-batch score --model DIR` loads it).", "",
        f"Best epoch: {metrics['best_epoch']} by validation {cfg.metric_for_best} = {metrics['best_value']:.4f} "
        f"({cfg.split} split: {sizes['train']} train / {sizes['validation']} "
        f"validation articles, {sizes['outlets_in_both']} outlet(s) in both).", "",
    ]


def _result_lines(metrics: dict) -> list[str]:
    """The per-epoch table, the test figures and the temperature."""
    lines = [
        "## Training results", "",
        "| Training Loss | Epoch | Step | Validation Loss | Accuracy | Macro-F1 | F1 left | F1 center | F1 right |",
        "|:---:|:---:|:---:|:---:|:---:|:---:|:---:|:---:|:---:|",
    ]
    for r in metrics["epochs"]:
        f1 = r["per_class_f1"]
        lines.append(f"| {r['train_loss']:.4f} | {r['epoch']} | {r['step']} | {r['val_loss']:.4f} "
                     f"| {r['accuracy']:.4f} "
                     f"| {r['macro_f1']:.4f} | {f1['left']:.4f} | {f1['center']:.4f} | {f1['right']:.4f} |")
    if metrics.get("test"):
        t = metrics["test"]
        lines += ["", f"Test: accuracy {t['accuracy']:.4f}, macro-F1 {t['macro_f1']:.4f}, ECE {t['ece']:.4f} "
                  f"on {t['n']} articles."]
    cal = metrics.get("calibration")
    if cal:
        lines += ["", f"Temperature scaling: T = {cal['temperature']:.3f} fitted on validation; ECE "
                  f"{cal['ece_before']:.4f} -> {cal['ece_after']:.4f}, NLL {cal['nll_before']:.4f} -> "
                  f"{cal['nll_after']:.4f}. The scorer divides logits by T (calibration.json)."]
    return lines


def _hyperparameter_lines(cfg: TrainConfig, recipe: dict) -> list[str]:
    """The recipe's settings: the linear model's and the split's for every kind, the loop's for a
    transformer or an ensemble."""
    c = recipe["config"]
    linear = [f"- linear: word 1-{c['linear_ngram_max']}-grams, {c['linear_max_features']} features, min_df "
              f"{c['linear_min_df']}, C {c['linear_c']}, outlet weight {c['linear_outlet_weight']}",
              f"- split: {c['split']} grouped by {c['group_by']}, validation share {c['val_fraction']}, "
              f"seed {c['seed']}"]
    if cfg.kind == "linear":
        return linear
    return [
        f"- learning_rate: {c['learning_rate']}", f"- train_batch_size: {c['train_batch_size']}",
        f"- eval_batch_size: {c['eval_batch_size']}", f"- seed: {c['seed']}",
        f"- optimizer: Adam with betas=({c['adam_beta1']},{c['adam_beta2']}) and epsilon={c['adam_epsilon']}, "
        f"weight decay {c['weight_decay']}",
        f"- lr_scheduler_type: {c['lr_scheduler']}", f"- lr_scheduler_warmup_steps: {c['warmup_steps']}",
        f"- num_epochs: {c['epochs']} (early stopping after {c['early_stopping']} without improvement)",
        f"- precision: {recipe['precision']} on {recipe['device']}", f"- max_length: {recipe['max_length_used']}",
        f"- outlet masking: {c.get('mask_outlet')}, adversary weight: {c.get('adversary_weight')}, "
        f"class balance: {c.get('class_balance')}, windows per article: {c.get('train_windows')} "
        f"(stride {c.get('window_stride')})",
        *(linear if cfg.kind == "ensemble" else linear[1:]),
    ]


def model_card(cfg: TrainConfig, recipe: dict, metrics: dict,
               terms: dict[str, list[tuple[str, float]]] | None = None) -> str:
    """A model card with the same per-epoch table as the published DistilBERT-AllSides card (and, for a
    linear model or an ensemble's linear half, the strongest terms each way)."""
    lines = [*_header_lines(cfg, recipe, metrics), *_result_lines(metrics), *term_lines(terms),
             "", "## Training hyperparameters", "", *_hyperparameter_lines(cfg, recipe),
             "", "## Framework versions", "", *[f"- {k} {v}" for k, v in recipe["package_versions"].items()], ""]
    return "\n".join(lines)
