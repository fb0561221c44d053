"""A damaged model directory is refused before any work, in one line that names the damaged file: files
that are not JSON or lack a key, truncated, empty or pickled weights, weights that are not finite (a
diverged training). A model path with a typo is a missing directory, never a hub lookup."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from allsides_batch.__main__ import app
from allsides_batch.errors import UserError
from allsides_batch.models.hub import is_local_path, local_model_dir

MAXLEN = 64


@pytest.fixture(scope="module")
def small(articles_sample, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("small") / "small.parquet"
    pq.write_table(pq.read_table(articles_sample).slice(0, 6), path)
    return path


def _score(model, small, out, *extra):
    return CliRunner().invoke(app, ["score", "--model", str(model), "--input", str(small), "--output", str(out),
                                    "--device", "cpu", "--workers", "0", "--no-progress", *extra])


def _assert_one_error_line(result, *names):
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for name in names:
        assert name in lines[0], lines[0]


def _rewrite(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _json_without(path: Path, key: str) -> bytes:
    obj = json.loads(path.read_text())
    del obj[key]
    return json.dumps(obj).encode()


def _set_weights(path: Path, value: float, name: str) -> None:
    from safetensors.numpy import load_file, save_file

    weights = load_file(path)
    weights[name].flat[0] = value
    save_file(weights, path)


# (model fixture, damaged file, the damage: the file's bytes given the file)
DAMAGES = {
    "vectorizer-not-json": ("linear", "vectorizer.json", lambda p: b'{"vocabulary": ["a", '),
    "vectorizer-no-vocabulary": ("linear", "vectorizer.json", lambda p: _json_without(p, "vocabulary")),
    "kind-file-binary": ("linear", "allsides_model.json", lambda p: b"\x00\xff\xfe garbage"),
    "kind-file-a-list": ("linear", "allsides_model.json", lambda p: b"[1, 2]"),
    "text-prep-garbage": ("linear", "text_preparation.json", lambda p: b"not json at all"),
    "text-prep-a-list": ("linear", "text_preparation.json", lambda p: b"[1]"),
    "linear-weights-truncated": ("linear", "linear.safetensors", lambda p: p.read_bytes()[: p.stat().st_size // 2]),
    "linear-weights-empty": ("linear", "linear.safetensors", lambda p: b""),
    "linear-calibration-no-key": ("linear", "calibration.json", lambda p: b'{"temp": 1.0}'),
    "pickle-as-safetensors": ("transformer", "model.safetensors", lambda p: pickle.dumps({"weight": [1.0]})),
    "config-not-json": ("transformer", "config.json", lambda p: b"{{"),
    "recipe-not-json": ("transformer", "training_recipe.json", lambda p: b"{{"),
    "calibration-not-json": ("transformer", "calibration.json", lambda p: b"{"),
    "transformer-text-prep-garbage": ("transformer", "text_preparation.json", lambda p: b"\xff"),
    "tokenizer-config-a-list": ("transformer", "tokenizer_config.json", lambda p: b"[]"),
    "ensemble-weights-nan": ("ensemble", "allsides_model.json",
                             lambda p: b'{"kind": "ensemble", "weights": {"transformer": NaN, "linear": 1.0}}'),
}


def _model_copy(kind: str, linear_model: str, tiny_model_dir: str, dest: Path) -> Path:
    """A copy of a fixture model; an ensemble of the two (weights as training fits them) for "ensemble"."""
    if kind != "ensemble":
        shutil.copytree(linear_model if kind == "linear" else tiny_model_dir, dest)
        return dest
    shutil.copytree(tiny_model_dir, dest / "transformer")
    shutil.copytree(linear_model, dest / "linear")
    from allsides_batch.models.identity import write_model_kind

    write_model_kind(str(dest), "ensemble", weights={"transformer": 0.5, "linear": 1.0})
    return dest


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_model_file_is_one_error_line_naming_it(damage, linear_model, tiny_model_dir, small, tmp_path):
    kind, name, bytes_of = DAMAGES[damage]
    model = _model_copy(kind, linear_model, tiny_model_dir, tmp_path / "model")
    path = model / name
    _rewrite(path, bytes_of(path))
    out = tmp_path / "out"
    result = _score(model, small, out)  # no --max-length: the plan reads the training recipe for it
    _assert_one_error_line(result, name)
    assert not out.exists()  # refused before any work: nothing written, nothing half-written


def test_a_damaged_model_is_refused_before_device_processes_start(linear_model, small, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(linear_model, model)
    _rewrite(model / "vectorizer.json", b"{")
    result = _score(model, small, tmp_path / "out", "--devices", "cpu:2")
    _assert_one_error_line(result, "vectorizer.json")
    assert not (tmp_path / "out").exists()


# ---- weights that are not finite: a diverged training ------------------------------------------------------
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_linear_weights_that_are_not_finite_are_refused(value, linear_model, small, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(linear_model, model)
    from safetensors.numpy import load_file, save_file

    weights = load_file(model / "linear.safetensors")
    weights["coef"][:] = value  # every weight, as a diverged fit leaves them
    save_file(weights, model / "linear.safetensors")
    result = _score(model, small, tmp_path / "out")
    _assert_one_error_line(result, "linear.safetensors", "coef", "retrain")
    assert not (tmp_path / "out").exists()


def test_transformer_weights_that_are_not_finite_are_refused(tiny_model_dir, small, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    _set_weights(model / "model.safetensors", np.nan, "classifier.weight")
    result = _score(model, small, tmp_path / "out", "--max-length", str(MAXLEN))
    _assert_one_error_line(result, "model.safetensors", "classifier.weight")
    assert not (tmp_path / "out").exists()


def test_a_temperature_that_is_not_finite_is_refused(tmp_path):
    from allsides_batch.models.calibration import CALIBRATION_FILE, load_temperature

    (tmp_path / CALIBRATION_FILE).write_text('{"temperature": Infinity}')  # every probability would be 1/3
    with pytest.raises(UserError, match="finite"):
        load_temperature(str(tmp_path))


# ---- a model path with a typo -----------------------------------------------------------------------------
def test_a_path_with_a_typo_is_a_missing_directory_not_a_hub_lookup(tiny_model_dir, small, tmp_path, monkeypatch):
    shutil.copytree(tiny_model_dir, tmp_path / "runs" / "linear")
    monkeypatch.chdir(tmp_path)
    result = _score("runs/linaer", small, tmp_path / "out", "--max-length", str(MAXLEN))
    _assert_one_error_line(result, "model directory not found", "runs/linaer", "runs/linear")
    assert "Hub" not in result.stderr
    for name in ("runs/linaer", "runs/linear/", "a/b/c", "./x", "~/x"):
        assert is_local_path(name), name
    for name in ("distilbert-base-uncased", "org-that-is-not-here/model"):
        assert not is_local_path(name), name
    with pytest.raises(UserError, match="model directory not found"):
        local_model_dir("runs/linaer/")
    assert os.path.samefile(local_model_dir("runs/linear"), tmp_path / "runs" / "linear")


def test_evaluate_refuses_a_damaged_metrics_file_before_scoring(linear_model, unique_sample, tmp_path):
    """evaluate reads the model's training_recipe.json and metrics.json (was the evaluated data held out?)
    after scoring; a damaged one is one error line naming it, before the scoring starts."""
    model = tmp_path / "model"
    shutil.copytree(linear_model, model)
    _rewrite(model / "metrics.json", b"{")
    result = CliRunner().invoke(app, ["evaluate", "--model", str(model), "--data", str(unique_sample),
                                      "--workers", "0", "--no-progress"])
    _assert_one_error_line(result, "metrics.json")
