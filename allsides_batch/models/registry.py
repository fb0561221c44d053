"""A models root: published models side by side, named by model id, and an atomic `latest` pointer.

```
models/
  3f2a9c0d1e4b5a67/      one directory per published model (its model_id: weights + config hash)
  latest -> 3f2a9c0d1e4b5a67
```
`latest` is a relative symlink replaced with one rename, so a reader (a nightly run starting at
the wrong moment) sees the old model or the new one, never a half-copied directory. Scoring runs
resolve it once, at their start, to the real directory, so a model published mid-night does not
mix two models in one night's scores.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import asdict, dataclass

from ..config import MODELS_ROOT
from ..errors import UserError
from .hub import is_local_path
from .identity import missing_model_files, model_id

LATEST = "latest"
# Macro-F1 of guessing: three labels, each predicted a third of the time, scores 1/3 on balanced data. A
# model at or below it has learned nothing usable (a diverged or barely trained run), and is not published
# unless the caller says so.
CHANCE_MACRO_F1 = 1 / 3


def check_quality(macro_f1: float, split: str, allow_below_chance: bool = False,
                  min_macro_f1: float | None = None) -> None:
    """Refuse to publish a model whose `split` macro-F1 is at or below chance (unless `allow_below_chance`),
    or below the caller's own `min_macro_f1`."""
    import math

    if not allow_below_chance and (math.isnan(macro_f1) or macro_f1 <= CHANCE_MACRO_F1):
        raise UserError(f"{split} macro-F1 {macro_f1:.4f} is at or below chance ({CHANCE_MACRO_F1:.4f}, three labels): "
                        "not published, latest unchanged; train longer or on more data, or pass "
                        "--allow-below-chance (flow parameter allow_below_chance=true) to publish it anyway")
    if min_macro_f1 is not None and macro_f1 < min_macro_f1:
        raise UserError(f"{split} macro-F1 {macro_f1:.4f} is below min_macro_f1 {min_macro_f1}: "
                        "not published, latest unchanged")


@dataclass
class PublishedModel:
    model_id: str
    path: str  # <models_root>/<model_id>
    latest: str | None  # <models_root>/latest when it was moved, else None

    def to_dict(self) -> dict:
        return asdict(self)


def _check_model_dir(model_dir: str) -> None:
    missing = missing_model_files(model_dir)
    if missing:
        raise UserError(f"{model_dir!r} is not a complete model directory: {', '.join(missing)} missing")


def publish_model(model_dir: str, models_root: str, set_latest: bool = True) -> PublishedModel:
    """Copy `model_dir` to `<models_root>/<model_id>` (once: the same id means the same bytes) and,
    with `set_latest`, point `<models_root>/latest` at it."""
    _check_model_dir(model_dir)
    mid = model_id(model_dir)
    os.makedirs(models_root, exist_ok=True)
    dest = os.path.join(models_root, mid)
    if not os.path.isdir(dest):
        # copy beside the destination, then rename: a crash leaves a *.partial-* directory, never a
        # directory that looks published but is incomplete
        tmp = f"{dest}.partial-{uuid.uuid4().hex[:8]}"
        shutil.copytree(model_dir, tmp)
        try:
            os.replace(tmp, dest)
        except OSError:
            # another publisher of the same model won the race; its copy is byte-identical
            shutil.rmtree(tmp, ignore_errors=True)
            if not os.path.isdir(dest):
                raise
    latest = point_latest(models_root, mid) if set_latest else None
    return PublishedModel(model_id=mid, path=os.path.abspath(dest), latest=latest)


def point_latest(models_root: str, mid: str) -> str:
    """Atomically point `<models_root>/latest` at `<models_root>/<mid>`."""
    target = os.path.join(models_root, mid)
    if not os.path.isdir(target):
        raise UserError(f"cannot point latest at {target!r}: no such published model")
    link = os.path.join(models_root, LATEST)
    if os.path.exists(link) and not os.path.islink(link):
        raise UserError(f"{link!r} is a real file or directory, not a pointer; move it away so "
                        "`latest` can be managed as a symlink")
    tmp = os.path.join(models_root, f".{LATEST}.{uuid.uuid4().hex[:8]}")
    os.symlink(mid, tmp)  # relative: the models root can be mounted anywhere
    os.replace(tmp, link)
    return os.path.abspath(link)


def resolve_model(model: str, models_root: str = MODELS_ROOT) -> str:
    """'latest' (or a models-root entry name) → the real directory it names now; a path → its
    absolute path; anything else (a hub name) unchanged."""
    if model == LATEST or (os.sep not in model and os.path.isdir(os.path.join(models_root, model))):
        path = os.path.join(models_root, model)
        if not os.path.exists(path):
            raise UserError(f"no model at {path!r}: publish one first (allsides-batch nightly trains and publishes "
                            "one when there is none, or prefect deployment run train-model/manual), or pass a model "
                            "directory")
        return os.path.realpath(path)
    if is_local_path(model):
        if os.path.isdir(os.path.expanduser(model)):
            return os.path.abspath(os.path.expanduser(model))
    elif "://" in model or model.count("/") == 1:
        return model  # a remote URL or a hub name such as org/model: the scorer loads it
    raise UserError(f"model {model!r} is neither 'latest', a published model id, nor a directory")
