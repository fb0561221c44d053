"""A model directory as a scoring run sees it, read once: scoring.plan describes the model before any work
and hands the description to every Scorer (on every device) instead of each reading the directory again."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..config import ScoreConfig
from ..errors import UserError
from .files import CONFIG_FILE, read_recipe
from .hub import check_complete, load_tokenizer, local_model_dir
from .identity import label_order, model_id, parse_label_map, read_model_kind


@dataclass(frozen=True)
class ModelDescription:
    """What scoring needs to know of a model directory before loading its weights (picklable: it travels to
    the device processes with the plan)."""

    model_dir: str
    kind: str                                 # transformer, linear or ensemble (identity.MODEL_KINDS)
    transformer_dir: str | None               # where the transformer's files are; None for a linear model
    linear_dir: str | None                    # where the linear model's files are; None for a transformer
    order: tuple[int, ...] = (0, 1, 2)        # the output index of left, center and right (identity.label_order)
    max_length: int = 0                       # tokens per window (--max-length or the default); 0: linear alone
    weights: dict | None = field(default=None)  # an ensemble's member weights (its kind file)
    model_id: str = ""                        # identity.model_id; "" when not asked for


def describe_model(cfg: ScoreConfig, complete: bool = False, with_id: bool = False) -> ModelDescription:
    """cfg.model described for scoring with cfg's label map and max length; a UserError for labels that
    cannot be mapped. `complete`: first refuse a directory that cannot score (hub.check_complete), as
    plan does before any work; `with_id`: hash it for model_id too."""
    model_dir = local_model_dir(cfg.model)  # a local path that is not a directory: "model directory not found"
    info = read_model_kind(model_dir)
    kind = info["kind"]
    if complete:
        check_complete(model_dir, kind)  # every file scoring reads, readable and finite, before any work
    transformer_dir, linear_dir = member_dirs(model_dir, kind)
    order, max_length = (0, 1, 2), 0
    if transformer_dir is not None:
        config = _load_config(transformer_dir)
        order = tuple(label_order(config, parse_label_map(cfg.label_map)))
        max_length = cfg.max_length or default_max_length(transformer_dir, config, load_tokenizer(transformer_dir))
    return ModelDescription(model_dir, kind, transformer_dir, linear_dir, order, max_length, info.get("weights"),
                            model_id(model_dir, kind) if with_id else "")


def member_dirs(model_dir: str, kind: str) -> tuple[str | None, str | None]:
    """(transformer directory, linear directory) of a model of `kind`; None where it has no such part."""
    if kind == "ensemble":
        return os.path.join(model_dir, "transformer"), os.path.join(model_dir, "linear")
    return (None, model_dir) if kind == "linear" else (model_dir, None)


def default_max_length(model_dir: str, config, tokenizer) -> int:
    """training_recipe.json's max_length_used, else the tokenizer's limit capped by the position table and 512."""
    used = (read_recipe(model_dir) or {}).get("max_length_used")
    if used:
        return int(used)
    limit = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512)
    positions = getattr(config, "max_position_embeddings", None)
    return min(limit, int(positions)) if positions else limit


def _load_config(model_dir: str):
    from transformers import AutoConfig

    if not os.path.isfile(os.path.join(model_dir, CONFIG_FILE)):
        raise UserError(f"{model_dir!r} is not a model directory: no {CONFIG_FILE}")
    try:
        return AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read the model config in {model_dir!r}: {exc}") from exc
