"""SIGTERM and SIGINT to `score`, `train` and `nightly` leave no process behind: no device process, no
tokenizer or fold worker, no temporary Prefect server (allsides_batch/runtime/shutdown.py). Each run is stopped at
an exact point by a stall seam, its process tree is recorded, then it is signalled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from allsides_batch.scoring import STALL_ENV as SCORE_STALL
from allsides_batch.storage.layout import leases_root
from allsides_batch.training.train import STALL_ENV as TRAIN_STALL

REPO = Path(__file__).resolve().parents[2]


def _start(args: list[str], log: Path, cwd: Path, **env: str) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # nightly: its own server
    environment.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **env)
    with open(log, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "allsides_batch", *args], stdout=subprocess.DEVNULL,
                                stderr=fh, env=environment, cwd=cwd)


def _wait_for_marker(proc: subprocess.Popen, marker: Path, log: Path, limit: float = 240.0) -> None:
    deadline = time.monotonic() + limit
    while not marker.exists():
        assert proc.poll() is None, f"exited ({proc.returncode}) before the stall point:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"never reached the stall point:\n{log.read_text()}"
        time.sleep(0.2)


def _stop_and_check(proc: subprocess.Popen, sig: signal.Signals, log: Path, expect_children: int) -> int:
    """Signal the run; returns its exit code once it and every process it had started are gone."""
    tree = psutil.Process(proc.pid).children(recursive=True)
    assert len(tree) >= expect_children, [p.cmdline() for p in tree]
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still running 90 s after {sig.name}:\n{log.read_text()}")
    finally:
        _, alive = psutil.wait_procs(tree, timeout=15)
        for p in alive:
            p.kill()
    left = [" ".join(p.cmdline())[:120] for p in alive]
    assert not left, f"left behind after {sig.name}: {left}\n{log.read_text()}"
    return code


def _scored_ids(output: Path) -> list[str]:
    parts = sorted(output.glob("scores/model_id=*/*.parquet"))
    return sorted(i for p in parts for i in pq.read_table(p, columns=["id"])["id"].to_pylist())


@pytest.fixture(scope="module")
def three_files(unique_sample, tmp_path_factory) -> Path:
    table = pq.read_table(unique_sample)
    out = tmp_path_factory.mktemp("signals-corpus")
    for i in range(3):
        pq.write_table(table.slice(i * 150, 150), out / f"day-{i}.parquet")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_score_on_two_devices_stopped_by_a_signal_leaves_no_process(sig, linear_model, three_files, tmp_path):
    """Two device processes, each with a tokenizer worker, one stalled after its first part: the signal ends
    them all, drops the half-written part, and a rerun scores every article exactly once."""
    out, log, marker = tmp_path / "out", tmp_path / "stderr.txt", tmp_path / "stalled"
    args = ["score", "--model", linear_model, "--input", str(three_files), "--output", str(out),
            "--devices", "cpu:2", "--workers", "1", "--no-progress"]
    proc = _start(args, log, tmp_path, **{SCORE_STALL: "part-committed:1", f"{SCORE_STALL}_MARKER": str(marker)})
    _wait_for_marker(proc, marker, log)
    code = _stop_and_check(proc, sig, log, expect_children=3)  # device processes, their tokenizer workers
    assert code == (1 if sig == signal.SIGINT else 128 + sig), (code, log.read_text())  # click: Ctrl-C is 1
    assert "Traceback" not in log.read_text()
    assert not list(out.glob("scores/*/.*.tmp")), "a half-written part was left"
    assert not list(Path(leases_root(str(out))).glob("*")), "the stopped run's lease was left"

    rerun = subprocess.run([sys.executable, "-m", "allsides_batch", *args], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    expected = sorted(i for p in sorted(three_files.glob("*.parquet")) for i in pq.read_table(p)["id"].to_pylist())
    assert _scored_ids(out) == expected


@pytest.mark.slow
def test_train_stopped_while_its_folds_run_in_workers_leaves_no_process(articles_path, tmp_path):
    """The out-of-fold fits run in worker processes (5,000 articles or more): SIGTERM ends them and leaves
    no model and no staging directory."""
    table = pq.read_table(articles_path)
    data = tmp_path / "data.parquet"
    pq.write_table(table.take(np.random.default_rng(0).choice(len(table), 5000, replace=False)), data)
    out, log, marker = tmp_path / "model", tmp_path / "stderr.txt", tmp_path / "stalled"
    args = ["train", "--data", str(data), "--output", str(out), "--linear-outlet-folds", "2",
            "--linear-max-features", "20000", "--no-progress"]
    proc = _start(args, log, tmp_path, **{TRAIN_STALL: "fold", f"{TRAIN_STALL}_MARKER": str(marker)})
    _wait_for_marker(proc, marker, log)
    code = _stop_and_check(proc, signal.SIGTERM, log, expect_children=2)  # two fold workers
    assert code == 128 + signal.SIGTERM, (code, log.read_text())
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("model.")], list(tmp_path.iterdir())


@pytest.mark.slow
def test_nightly_stopped_while_scoring_leaves_no_server_behind(linear_model, three_files, tmp_path):
    """nightly's temporary Prefect server (uvicorn, a child process) goes with it on SIGTERM."""
    from allsides_batch.models.registry import publish_model

    models = tmp_path / "models"
    publish_model(linear_model, str(models))
    out, log, marker = tmp_path / "out", tmp_path / "stderr.txt", tmp_path / "stalled"
    args = ["nightly", "--corpus", str(three_files), "--output", str(out), "--models-root", str(models),
            "--run-date", "2026-01-02", "--no-progress"]
    proc = _start(args, log, tmp_path, PREFECT_HOME=str(tmp_path / "prefect-home"), DO_NOT_TRACK="1",
                  **{SCORE_STALL: "part-committed:1", f"{SCORE_STALL}_MARKER": str(marker)})
    _wait_for_marker(proc, marker, log)
    servers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "uvicorn" in " ".join(p.cmdline())]
    assert servers, "nightly runs no temporary server"
    code = _stop_and_check(proc, signal.SIGTERM, log, expect_children=1)
    assert code == 128 + signal.SIGTERM, (code, log.read_text())
    assert not (out / "nights" / "2026-01-02" / "aggregates").exists()  # the night stopped before aggregating
