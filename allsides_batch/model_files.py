"""Reading a model directory's files: JSON settings and safetensors weights, each refused with a UserError
that names the file when it is damaged (not JSON, not an object, a key missing, truncated, not
safetensors). The loaders of every model file go through here, so scoring, evaluation and explanation
all refuse alike."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import numpy as np

from .errors import UserError

RETRAIN = "retrain the model or restore the file from a good copy"


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


def load_weights(path: str, names: Iterable[str]) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file as numpy arrays, `names` among them."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        weights = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path} is damaged: not a readable safetensors file ({exc}); {RETRAIN}") from exc
    missing = [n for n in names if n not in weights]
    if missing:
        raise UserError(f"{path} is damaged: tensor {', '.join(map(repr, missing))} missing; {RETRAIN}")
    return weights


def check_transformer_weights(model_dir: str) -> None:
    """model.safetensors (or each shard its index lists) is a readable safetensors file."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.isfile(index):
        shards = sorted(set(read_model_json(index, ["weight_map"])["weight_map"].values()))
    else:
        shards = ["model.safetensors"]
    for shard in shards:
        _check_readable(os.path.join(model_dir, shard))


def _check_readable(path: str) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as fh:
            fh.keys()
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path} is damaged: not a readable safetensors file ({exc}); {RETRAIN}") from exc
