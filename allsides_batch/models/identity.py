"""What a model directory is: its kind file (allsides_model.json), the files its kind needs, its labels
and label maps, and model_id, the hash that names it."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re

from .. import LABELS
from ..errors import UserError
from ..storage.io import hash_file, memo_while_unchanged
from .files import (
    CALIBRATION_FILE,
    CONFIG_FILE,
    ENSEMBLE_MEMBERS,
    LINEAR_WEIGHTS_FILE,
    MODEL_KIND_FILE,
    RETRAIN,
    TEXT_PREP_FILE,
    TOKENIZER_FILES,
    TRANSFORMER_WEIGHTS_FILE,
    VECTORIZER_FILE,
    read_model_json,
)

MODEL_KINDS = ("transformer", "linear", "ensemble")

ID2LABEL = {i: name for i, name in enumerate(LABELS)}

LABEL2ID = {name: i for i, name in ID2LABEL.items()}


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
    info = read_model_json(path, ["kind"])
    if info.get("kind") not in MODEL_KINDS:
        raise UserError(f"{path}: unknown model kind {info.get('kind')!r} (known: {', '.join(MODEL_KINDS)})")
    if info["kind"] == "ensemble":
        weights = info.get("weights")
        if not isinstance(weights, dict) or not all(
                isinstance(weights.get(m), (int, float)) and math.isfinite(weights[m]) for m in ENSEMBLE_MEMBERS):
            raise UserError(f"{path} is damaged: its weights {weights!r} are not one finite number for each of "
                            f"{', '.join(ENSEMBLE_MEMBERS)}; {RETRAIN}")
    return info


# What each kind needs to score (an ensemble: each member's, under its subdirectory).
REQUIRED_FILES = {"transformer": (CONFIG_FILE, TRANSFORMER_WEIGHTS_FILE),
                  "linear": (VECTORIZER_FILE, LINEAR_WEIGHTS_FILE)}


def missing_model_files(model_dir: str, kind: str | None = None) -> list[str]:
    """Files the directory's model kind needs that are not there (relative paths; empty when complete).
    `kind`: the directory's, when the caller has read it already."""
    kind = kind or read_model_kind(model_dir)["kind"]
    if kind == "ensemble":
        needed = [f"{m}/{name}" for m in ENSEMBLE_MEMBERS for name in REQUIRED_FILES[m]]
    else:
        needed = list(REQUIRED_FILES[kind])
    return [name for name in needed if not os.path.isfile(os.path.join(model_dir, name))]


# Files whose bytes decide what a model scores; an ensemble adds its members' files under their subdirectory.
_ID_FILES = (TRANSFORMER_WEIGHTS_FILE, CONFIG_FILE, TEXT_PREP_FILE, CALIBRATION_FILE, MODEL_KIND_FILE,
             VECTORIZER_FILE, LINEAR_WEIGHTS_FILE, *TOKENIZER_FILES)


def model_id(model_dir: str, kind: str | None = None) -> str:
    """Short hash of weights + config + tokenizer files + text preparation (+ calibration, kind, linear
    files, ensemble members): two runs with the same id scored identically. `kind`: the directory's, when
    the caller has read it already. Each file is read once per process while it stays the same
    (storage.io.memo_while_unchanged)."""
    names = list(_ID_FILES)
    if (kind or read_model_kind(model_dir)["kind"]) == "ensemble":
        names += [f"{member}/{name}" for member in ENSEMBLE_MEMBERS for name in _ID_FILES]
    present = [(name, os.path.join(model_dir, name)) for name in names
               if os.path.isfile(os.path.join(model_dir, name))]

    def compute() -> str:
        digest = hashlib.sha256()
        for name, path in present:
            digest.update(name.encode())
            hash_file(path, digest)
        return digest.hexdigest()[:16]

    return memo_while_unchanged(("model_id", *(name for name, _ in present)), [path for _, path in present], compute)
