"""What `train` promises about its output directory (docs/training.md): a model already there is replaced
only with --overwrite, and then completely; the new model is written beside --output and moved in when
complete, so a run interrupted while training or while writing never leaves half a model there (nor, after
Ctrl-C, its staging copy), and a rerun succeeds. Real training of the tiny model, in-process and as a
`python -m allsides_batch train` subprocess that is interrupted with SIGINT or SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from allsides_batch.__main__ import app
from allsides_batch.config import TrainConfig
from allsides_batch.training.train import STALL_ENV, train_model

# Real training runs, several as interrupted subprocesses: slow.
pytestmark = pytest.mark.slow

# A few optimizer steps of the tiny model: a complete model directory in about a second.
TINY = dict(kind="transformer", max_length=32, epochs=1, max_steps=2, train_batch_size=16, eval_batch_size=64,
            warmup_steps=2, max_train_samples=160, device="cpu", progress=False)
STAGING = ".partial-"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread (here and in the subprocesses, through OMP_NUM_THREADS): two OpenMP threads on
    a busy 2-core machine spin-wait and train ~10x slower."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _cfg(data, model, out, **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "data": [str(data)], "base_model": model, "output": str(out), **kw})


def _cli_args(data, model, out, **kw) -> list[str]:
    """The same run as _cfg(...) on the command line."""
    args = ["train", "--data", str(data), "--base-model", model, "--output", str(out)]
    for name, value in {**TINY, **kw}.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _staging_dirs(parent: Path) -> list[Path]:
    return sorted(p for p in parent.iterdir() if STAGING in p.name)


def _recipe(model_dir: Path) -> dict:
    return json.loads((model_dir / "training_recipe.json").read_text())


# ------------------------------------------------------------------------------------------- --overwrite

@pytest.mark.slow
def test_overwrite_is_needed_and_then_replaces_the_whole_directory(articles_sample, tiny_model_dir, tmp_path):
    out = tmp_path / "model"
    old = CliRunner().invoke(app, _cli_args(articles_sample, tiny_model_dir, out, learning_rate=1e-3))
    assert old.exit_code == 0, old.output
    (out / "notes-on-the-old-model.txt").write_text("left by hand beside the old model")
    (out / "old-subdir").mkdir()
    (out / "old-subdir" / "x.json").write_text("{}")
    before = _files(out)

    # without --overwrite: refused with one clear line, nothing touched
    refused = CliRunner().invoke(app, _cli_args(articles_sample, tiny_model_dir, out, learning_rate=5e-3))
    assert refused.exit_code == 2, refused.output
    errors = [line for line in refused.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "already holds a model" in errors[0] and "--overwrite" in errors[0], refused.output
    assert "Traceback" not in refused.output
    assert _files(out) == before

    # with --overwrite: the directory is the new run's, and only that
    new = CliRunner().invoke(app, [*_cli_args(articles_sample, tiny_model_dir, out, learning_rate=5e-3), "--overwrite"])
    assert new.exit_code == 0, new.output
    assert not (out / "notes-on-the-old-model.txt").exists() and not (out / "old-subdir").exists()
    recipe = _recipe(out)
    assert recipe["config"]["learning_rate"] == 5e-3 and recipe["config"]["overwrite"] is True
    assert (out / "model.safetensors").read_bytes() != before["model.safetensors"]
    assert not _staging_dirs(tmp_path)

    # ... the same files, with the same weights, as the same run into a new directory
    fresh = tmp_path / "fresh"
    train_model(_cfg(articles_sample, tiny_model_dir, fresh, learning_rate=5e-3))
    assert sorted(_files(out)) == sorted(_files(fresh))
    assert (out / "model.safetensors").read_bytes() == (fresh / "model.safetensors").read_bytes()
    assert json.loads((out / "metrics.json").read_text())["epochs"][0]["train_loss"] == \
        json.loads((fresh / "metrics.json").read_text())["epochs"][0]["train_loss"]


# ------------------------------------------------------------------------------------------ interruption

def _start(args: list[str], stderr_file: Path, **env: str) -> subprocess.Popen:
    with open(stderr_file, "wb") as err:
        return subprocess.Popen([sys.executable, "-m", "allsides_batch", *args], stdout=subprocess.DEVNULL,
                                stderr=err, env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def _wait_for(proc: subprocess.Popen, stderr_file: Path, ready, what: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not ready():
        assert proc.poll() is None, f"train exited ({proc.returncode}) before {what}:\n{stderr_file.read_text()}"
        assert time.monotonic() < deadline, f"train never reached {what}:\n{stderr_file.read_text()}"
        time.sleep(0.1)


def _stop(proc: subprocess.Popen, sig: signal.Signals) -> int:
    try:
        proc.send_signal(sig)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_train_interrupted_mid_training_leaves_no_model(sig, articles_sample, tiny_model_dir, tmp_path):
    out = tmp_path / "model"
    stderr_file = tmp_path / "stderr.txt"
    # far more epochs than the test waits for (--progress off: the epoch log lines are the progress)
    proc = _start(_cli_args(articles_sample, tiny_model_dir, out, epochs=1000, max_steps=100_000, early_stopping=0),
                  stderr_file)
    # clearly training: the first epoch has been trained and evaluated, the next is under way
    _wait_for(proc, stderr_file, lambda: "epoch 1.0: train_loss" in stderr_file.read_text(), "its first epoch")
    code = _stop(proc, sig)
    log = stderr_file.read_text()
    assert "epoch 1000" not in log
    if sig == signal.SIGINT:
        assert code == 1 and "Aborted!" in log, (code, log)  # click's answer to Ctrl-C
    else:
        assert code == -signal.SIGKILL
    assert not out.exists()
    assert not _staging_dirs(tmp_path)

    rerun = train_model(_cfg(articles_sample, tiny_model_dir, out))  # no --overwrite needed: nothing is there
    assert rerun.output_dir == str(out) and (out / "model.safetensors").is_file()
    assert not _staging_dirs(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_train_interrupted_while_writing_keeps_the_old_model(sig, articles_sample, tiny_model_dir, tmp_path):
    out = tmp_path / "model"
    train_model(_cfg(articles_sample, tiny_model_dir, out, learning_rate=1e-3))  # the good model already there
    good = _files(out)
    stderr_file, marker = tmp_path / "stderr.txt", tmp_path / "staged"
    proc = _start([*_cli_args(articles_sample, tiny_model_dir, out, learning_rate=5e-3), "--overwrite"], stderr_file,
                  **{STALL_ENV: "staged", STALL_ENV + "_MARKER": str(marker)})
    # the seam pauses the run once the new model is complete beside --output, before the old one goes
    _wait_for(proc, stderr_file, marker.exists, "the staged point")
    staging = tmp_path / f"model{STAGING}{proc.pid}"
    assert _staging_dirs(tmp_path) == [staging]
    assert _recipe(staging)["config"]["learning_rate"] == 5e-3
    code = _stop(proc, sig)
    log = stderr_file.read_text()

    assert _files(out) == good  # the old model, byte for byte
    if sig == signal.SIGINT:
        assert code == 1 and "Aborted!" in log, (code, log)
        assert not _staging_dirs(tmp_path)  # Ctrl-C removes the staged copy
    else:
        assert code == -signal.SIGKILL
        # nothing runs after SIGKILL: the staged copy stays. The next run ignores it (it stages under its
        # own process id; another `.partial-` may be a live run's) and never moves it in.
        assert _staging_dirs(tmp_path) == [staging]
    leftover = _files(staging) if staging.exists() else None

    rerun = train_model(_cfg(articles_sample, tiny_model_dir, out, learning_rate=2e-3, overwrite=True))
    assert rerun.output_dir == str(out)
    assert _recipe(out)["config"]["learning_rate"] == 2e-3
    assert (out / "model.safetensors").is_file() and _files(out)["model.safetensors"] != good["model.safetensors"]
    assert _staging_dirs(tmp_path) == ([staging] if leftover is not None else [])
    if leftover is not None:
        assert _files(staging) == leftover


def test_options_the_model_kind_does_not_read_are_named_in_a_warning(articles_sample, tmp_path, caplog):
    """--kind linear with a transformer's training options (the flow's max_steps, a base model): trained all the
    same, with a warning naming each option it ignores; nothing for options at their defaults."""
    assert TrainConfig().unused_options() == []
    assert TrainConfig(kind="transformer", linear_c=5.0).unused_options() == ["linear_c"]
    assert TrainConfig(kind="ensemble", max_steps=3, linear_c=5.0).unused_options() == []
    cfg = TrainConfig(kind="linear", data=[str(articles_sample)], output=str(tmp_path / "m"), max_steps=3000,
                      base_model="/models/base/distilbert-base-uncased", progress=False)
    with caplog.at_level("WARNING", logger="allsides_batch"):
        train_model(cfg)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("--base-model, --max-steps: ignored" in w for w in warnings), warnings
    assert (tmp_path / "m" / "linear.safetensors").is_file()
