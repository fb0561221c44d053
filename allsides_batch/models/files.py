"""A model directory's files: the name of every one (the only place they are spelled), and their reading:
JSON settings and safetensors weights, each refused with a UserError that names the file when it is damaged
(not JSON, not an object, a key missing, truncated, not safetensors) or holds weights that are not finite (a
training that diverged). The loaders of every model file go through here, so scoring, evaluation and
explanation all refuse alike."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import numpy as np

from ..errors import UserError

RETRAIN = "retrain the model or restore the file from a good copy"

# Every file of a model directory, named once. What each holds: docs/training.md.
# A transformers checkpoint: its config (labels, vocab_size, ...) and its weights, safetensors only; a
# sharded checkpoint lists its shards in the index. Pickle weights are recognised only to be refused.
CONFIG_FILE = "config.json"
TRANSFORMER_WEIGHTS_FILE = "model.safetensors"
TRANSFORMER_WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
PICKLE_WEIGHTS_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# A linear model: the vectorizer (analyzer settings, vocabulary) and idf, coef, intercept.
VECTORIZER_FILE = "vectorizer.json"
LINEAR_WEIGHTS_FILE = "linear.safetensors"
# {"kind": "transformer" | "linear" | "ensemble", ...}: what a model directory holds. A directory
# without it is a transformers checkpoint (ours from before model kinds, or any hub classifier).
MODEL_KIND_FILE = "allsides_model.json"
ENSEMBLE_MEMBERS = ("transformer", "linear")  # an ensemble's subdirectories, one complete model each
TEXT_PREP_FILE = "text_preparation.json"  # the TextPrep (text/prep.py) scoring applies as training did
CALIBRATION_FILE = "calibration.json"  # the temperature (models/calibration.py)
TRAINING_RECIPE_FILE = "training_recipe.json"  # its max_length_used is the scorer's default --max-length
METRICS_FILE = "metrics.json"  # per-epoch validation metrics and the test figures of training
TRAINING_OUTLETS_FILE = "training_outlets.json"  # the outlets a model was trained on (outlets.py)
OUTLET_RULE_FILE = "outlet_rule.json"  # fitted outlet_label thresholds (training/outlet_rule.py)
OOF_SCORES_FILE = "oof_scores.parquet"  # the out-of-fold article scores the outlet rule was fitted on
MODEL_CARD_FILE = "README.md"  # the model card (training/model_card.py)
# A tokenizer reads its vocabulary from one of these; the others configure it. All of them decide the ids
# a text becomes, so model_id hashes every one that a directory holds.
TOKENIZER_VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                         "sentencepiece.bpe.model", "tokenizer.model")
TOKENIZER_FILES = TOKENIZER_VOCAB_FILES + ("merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                                           "added_tokens.json")



def read_model_json(path: str, keys: Iterable[str] = ()) -> dict:
    """The JSON object in `path`, which must hold every one of `keys`."""
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is damaged: not UTF-8 text ({exc.reason} at byte {exc.start}); {RETRAIN}") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is damaged: not valid JSON ({exc}); {RETRAIN}") from exc
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc}); {RETRAIN}") from exc
    if not isinstance(obj, dict):
        raise UserError(f"{path} is damaged: it holds a JSON {type(obj).__name__}, not an object; {RETRAIN}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise UserError(f"{path} is damaged: key {', '.join(map(repr, missing))} missing; {RETRAIN}")
    return obj


def _read_if_there(model_dir: str, name: str) -> dict | None:
    path = os.path.join(model_dir, name)
    return read_model_json(path) if os.path.isfile(path) else None


def read_recipe(model_dir: str) -> dict | None:
    """The model's training_recipe.json (how it was trained, max_length_used); None if it has none."""
    return _read_if_there(model_dir, TRAINING_RECIPE_FILE)


def read_metrics(model_dir: str) -> dict | None:
    """The model's metrics.json (per-epoch validation metrics, refit_on_validation); None if it has none."""
    return _read_if_there(model_dir, METRICS_FILE)


def _not_finite(path: str, name: str, values) -> UserError:
    bad = int((~np.isfinite(values)).sum())
    return UserError(f"{path}: tensor {name!r} holds {bad} NaN or infinite value(s) of {values.size}: the "
                     "training diverged; retrain the model (e.g. a lower learning rate)")


def load_weights(path: str, names: Iterable[str]) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file as numpy arrays: `names` present, every value finite."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        weights = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path} is damaged: not a readable safetensors file ({exc}); {RETRAIN}") from exc
    missing = [n for n in names if n not in weights]
    if missing:
        raise UserError(f"{path} is damaged: tensor {', '.join(map(repr, missing))} missing; {RETRAIN}")
    for name, values in weights.items():
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise _not_finite(path, name, values)
    return weights


def check_transformer_weights(model_dir: str) -> None:
    """model.safetensors (or each shard its index lists) is safetensors and every weight is finite. Tensors
    are read one at a time from the memory-mapped file, so memory stays at the largest tensor."""
    index = os.path.join(model_dir, TRANSFORMER_WEIGHTS_INDEX_FILE)
    if os.path.isfile(index):
        shards = sorted(set(read_model_json(index, ["weight_map"])["weight_map"].values()))
    else:
        shards = [TRANSFORMER_WEIGHTS_FILE]
    for shard in shards:
        _check_finite_tensors(os.path.join(model_dir, shard))


def _check_finite_tensors(path: str) -> None:
    import torch
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as fh:
            for name in fh.keys():
                values = fh.get_tensor(name)
                # a float64 sum is NaN or infinite exactly when an element is (float32 weights cannot
                # overflow it), and about 8x faster than an elementwise isfinite
                if values.is_floating_point() and not torch.isfinite(values.sum(dtype=torch.float64)):
                    raise _not_finite(path, name, values.float().numpy())
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path} is damaged: not a readable safetensors file ({exc}); {RETRAIN}") from exc
