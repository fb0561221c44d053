"""Models root: publish by model id, atomic `latest` pointer, resolution of 'latest' and paths."""

from __future__ import annotations

import os
import shutil

import pytest

from allsides_batch.errors import UserError
from allsides_batch.models.identity import model_id
from allsides_batch.models.registry import point_latest, publish_model, resolve_model


def test_publish_copies_under_model_id_and_moves_latest(tiny_model_dir, tmp_path):
    root = tmp_path / "models"
    pub = publish_model(tiny_model_dir, str(root))
    assert pub.model_id == model_id(tiny_model_dir)
    assert os.path.isfile(os.path.join(pub.path, "model.safetensors"))
    assert os.path.islink(root / "latest") and os.readlink(root / "latest") == pub.model_id  # relative
    assert resolve_model("latest", str(root)) == os.path.realpath(pub.path)
    assert model_id(resolve_model("latest", str(root))) == pub.model_id
    # publishing the same bytes again is a no-op copy, and leaves no temporary entries behind
    again = publish_model(tiny_model_dir, str(root))
    assert again.path == pub.path
    assert sorted(os.listdir(root)) == sorted([pub.model_id, "latest"])


def test_latest_moves_only_when_asked_and_to_a_new_model(tiny_model_dir, tmp_path):
    root = tmp_path / "models"
    first = publish_model(tiny_model_dir, str(root))
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    # a different head bias → different weights → a different id
    from safetensors.torch import load_file, save_file

    weights = load_file(other / "model.safetensors")
    key = next(k for k in weights if k.endswith("classifier.bias"))
    weights[key] = weights[key] + 1.0
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    second = publish_model(str(other), str(root), set_latest=False)
    assert second.model_id != first.model_id and second.latest is None
    assert resolve_model("latest", str(root)) == os.path.realpath(first.path)
    point_latest(str(root), second.model_id)
    assert resolve_model("latest", str(root)) == os.path.realpath(second.path)
    assert resolve_model(first.model_id, str(root)) == os.path.realpath(first.path)


def test_bad_inputs_say_what_to_do(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="publish one first"):
        resolve_model("latest", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="neither"):
        resolve_model("no-such-dir", str(tmp_path))
    broken = tmp_path / "broken"
    broken.mkdir()
    with pytest.raises(UserError, match="model.safetensors missing|config.json missing"):
        publish_model(str(broken), str(tmp_path / "models"))
    root = tmp_path / "models2"
    (root / "latest").mkdir(parents=True)
    pub = publish_model(tiny_model_dir, str(root), set_latest=False)
    with pytest.raises(UserError, match="not a pointer"):
        point_latest(str(root), pub.model_id)
    assert resolve_model(str(tiny_model_dir)) == os.path.abspath(tiny_model_dir)
