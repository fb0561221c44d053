"""Rows the scorer must not label: a row whose probabilities came out NaN or infinite, and a row whose
string cells are not valid UTF-8. Each is quarantined with its reason; the rest of its file, and the
other files, are scored."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from scoring_runs import score_config

from allsides_batch.config import ScoreConfig
from allsides_batch.scoring import score_corpus

MAXLEN = 64


def _cfg(model, inputs, out) -> ScoreConfig:
    return score_config(model, inputs, out, max_length=MAXLEN, device="cpu", batch_tokens=8 * MAXLEN)


def _table(out: Path, name: str) -> pa.Table:
    return ds.dataset(str(out / name), partitioning="hive").to_table().sort_by("row_index" if name == "quarantine"
                                                                             else "id")


def test_rows_with_probabilities_that_are_not_finite_are_quarantined(linear_model, articles_sample, tmp_path):
    """Finite weights so large that an article's logits overflow float32 (a training on the edge of
    diverging): such rows come out NaN and are quarantined, never labelled; a row the huge weights do not
    touch (no known word: the intercepts alone) is scored."""
    from safetensors.numpy import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(linear_model, model)
    weights = load_file(model / "linear.safetensors")
    weights["coef"][0] = 3e38  # every term pushes left with float32's largest weights: two terms overflow
    save_file(weights, model / "linear.safetensors")
    rows = pq.read_table(articles_sample).slice(0, 4).to_pylist()
    rows.append({**rows[0], "id": "no-known-word", "title": None, "text": "zqxv wvuq"})
    inp = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), inp)
    summary = score_corpus(_cfg(model, [inp], tmp_path / "out"))
    assert (summary.input_rows, summary.scored_rows, summary.quarantined_rows) == (5, 1, 4)
    scores = _table(tmp_path / "out", "scores")
    assert scores["id"].to_pylist() == ["no-known-word"]
    assert np.isfinite(np.stack([scores[c].to_numpy() for c in ("p_left", "p_center", "p_right")])).all()
    q = _table(tmp_path / "out", "quarantine")
    assert q["row_index"].to_pylist() == [0, 1, 2, 3]
    assert q["id"].to_pylist() == [r["id"] for r in rows[:4]]
    assert set(q["reason"].to_pylist()) == {"non-finite probabilities from the model"}


def _with_invalid_utf8(table: pa.Table, column: str, row: int) -> pa.Table:
    """`table` with the string cell (row, column) replaced by bytes that are not UTF-8, the column still typed
    string, as a writer that never validated its strings leaves it."""
    values = [None if v is None else v.encode() for v in table[column].to_pylist()]
    values[row] = b"caf\xe9 \xff\xfe " + values[row]
    raw = pa.array(values, pa.binary())
    unchecked = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())  # no UTF-8 validation here
    return table.set_column(table.schema.get_field_index(column), column, unchecked)


@pytest.mark.parametrize("column", ["text", "source", "id"])
def test_a_cell_that_is_not_utf8_quarantines_its_row_and_the_rest_is_scored(column, tiny_model_dir,
                                                                            articles_sample, tmp_path):
    table = pq.read_table(articles_sample, columns=["id", "source", "title", "text"]).slice(0, 8)
    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(_with_invalid_utf8(table.slice(0, 5), column, 2), inp / "1-damaged.parquet")
    pq.write_table(table.slice(5, 3), inp / "2-good.parquet")
    summary = score_corpus(_cfg(tiny_model_dir, [inp], tmp_path / "out"))
    assert (summary.input_rows, summary.scored_rows, summary.quarantined_rows) == (8, 7, 1)
    assert summary.files_scored == 2
    ids = table["id"].to_pylist()
    assert _table(tmp_path / "out", "scores")["id"].to_pylist() == sorted(ids[:2] + ids[3:])
    q = _table(tmp_path / "out", "quarantine").to_pylist()
    assert len(q) == 1 and q[0]["row_index"] == 2 and q[0]["input_file"].endswith("1-damaged.parquet")
    assert q[0]["reason"].startswith(f"invalid UTF-8 in column {column!r}")
    # the quarantine row is readable: the bad bytes become U+FFFD, the rest of the cell is kept
    assert q[0][column].startswith("caf\ufffd \ufffd\ufffd ") and q[0][column].endswith(table[column][2].as_py())


@pytest.mark.slow
def test_a_tokenizer_process_killed_mid_chunk_fails_the_run_instead_of_hanging(linear_model, articles_sample, tmp_path):
    """The OOM killer (here SIGKILL) takes a tokenizer worker while it encodes a chunk: the run ends with one
    error line that says what happened and what to do, leaves no half-written part and no process, and a
    rerun scores everything. (A multiprocessing.Pool lost the chunk and waited for it forever.)"""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from allsides_batch.scoring import STALL_ENV

    corpus = tmp_path / "in"
    corpus.mkdir()
    pq.write_table(pq.read_table(articles_sample).slice(0, 300), corpus / "a.parquet")
    out, marker = tmp_path / "out", tmp_path / "stalled"
    args = [sys.executable, "-m", "allsides_batch", "score", "--model", linear_model, "--input", str(corpus),
            "--output", str(out), "--no-progress", "--workers", "1"]
    env = {**os.environ, STALL_ENV: "encode:1", STALL_ENV + "_MARKER": str(marker)}
    run = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():  # the worker has taken its first chunk and stopped there
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()[1][-3000:]
            time.sleep(0.1)
        workers = [p for p in psutil.Process(run.pid).children(recursive=True)
                   if "resource_tracker" not in " ".join(p.cmdline())]
        assert len(workers) == 1, workers
        tree = [run.pid, workers[0].pid]
        os.kill(workers[0].pid, signal.SIGKILL)
        _, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "tokenizer process ended unexpectedly" in errors[0], stderr[-3000:]
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in tree)
    assert not list(out.rglob("part-*.parquet")) and not [p for p in out.rglob(".*") if p.is_file()]
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    scored = sum(pq.read_table(p).num_rows for p in out.rglob("scores/**/part-*.parquet"))
    quarantined = sum(pq.read_table(p).num_rows for p in out.rglob("quarantine/**/part-*.parquet"))
    assert (scored + quarantined, quarantined < 30) == (300, True)
