"""Reading a model directory's files: JSON settings and safetensors weights, each refused with a UserError
that names the file when it is damaged (not JSON, not an object, a key missing, truncated, not
safetensors) or holds weights that are not finite (a training that diverged). The loaders of every
model file go through here, so scoring, evaluation and explanation all refuse alike."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import numpy as np

from ..errors import UserError

RETRAIN = "retrain the model or restore the file from a good copy"
# {"kind": "transformer" | "linear" | "ensemble", ...}: what a model directory holds. A directory
# without it is a transformers checkpoint (ours from before model kinds, or any hub classifier).
MODEL_KIND_FILE = "allsides_model.json"

ENSEMBLE_MEMBERS = ("transformer", "linear")  # an ensemble's subdirectories, one complete model each

# A tokenizer reads its vocabulary from one of these; the others configure it. All of them decide the ids
# a text becomes, so model_id hashes every one that a directory holds.
TOKENIZER_VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                         "sentencepiece.bpe.model", "tokenizer.model")

TOKENIZER_FILES = TOKENIZER_VOCAB_FILES + ("merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                                           "added_tokens.json")
TRAINING_RECIPE_FILE = "training_recipe.json"  # its max_length_used is the scorer's default --max-length


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
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.isfile(index):
        shards = sorted(set(read_model_json(index, ["weight_map"])["weight_map"].values()))
    else:
        shards = ["model.safetensors"]
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
