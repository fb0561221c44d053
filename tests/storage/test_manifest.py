"""The manifest never claims rows that are not there: concurrent runs over different corpora into one
output (leases), a lost score part, a damaged manifest entry, a file:// input rewritten in place.

The model is a real linear model trained on 600 shared articles (seconds); scoring runs the production
path (plan, parts, manifest, reconcile), the slow run as a real `python -m allsides_batch score` process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scoring_runs import REPO, aggregate, run_cli, score_config, scores_table

from allsides_batch.errors import UserError
from allsides_batch.scoring import STALL_ENV, pending_files, score_corpus
from allsides_batch.storage.corpus import read_manifest


def _corpus(root: Path, sample_table: pa.Table, spans: list[tuple[int, int]]) -> Path:
    root.mkdir(parents=True)
    for i, (start, n) in enumerate(spans):
        pq.write_table(sample_table.slice(start, n), root / f"{i}.parquet")
    return root


def _entry_file(out: Path, name: str) -> Path:
    found = next(e for e in read_manifest(str(out)) if Path(e["input"]).name == name)
    return out / "_manifest" / f"model_id={found['model_id']}" / f"{found['key']}.json"


def _scored(linear_model: str, sample_table: pa.Table, tmp_path: Path, spans) -> tuple[Path, Path]:
    """A corpus of `spans` of the sample scored once into tmp_path/out: (corpus, out)."""
    corpus = _corpus(tmp_path / "in", sample_table, spans)
    out = tmp_path / "out"
    score_corpus(score_config(linear_model, [corpus], out))
    return corpus, out


# ------------------------------------------------------------------ row 1: concurrent runs, one slow to commit

@pytest.mark.slow
@pytest.mark.parametrize("devices", [[], ["--devices", "cpu:2"]], ids=["one-device", "cpu:2"])
def test_a_run_slow_to_commit_keeps_its_part_while_another_run_prunes(linear_model, sample_table, tmp_path, devices):
    """Two runs over different corpora into one output; the first pauses between its part and its manifest
    entry while the second (a whole-corpus run, which prunes orphans) finishes. Both corpora end complete.
    With --devices the pause is in a device process, which works under its parent's run id and lease."""
    corpus_a = _corpus(tmp_path / "a", sample_table, [(0, 100), (100, 100)])
    corpus_b = _corpus(tmp_path / "b", sample_table, [(200, 200)])
    out = tmp_path / "out"
    marker, release = tmp_path / "stalled", tmp_path / "release"
    env = {**os.environ, STALL_ENV: "part-committed:1", f"{STALL_ENV}_MARKER": str(marker),
           f"{STALL_ENV}_RELEASE": str(release)}
    slow = subprocess.Popen([sys.executable, "-m", "allsides_batch", "score", "--model", linear_model, "--input",
                             str(corpus_a), "--output", str(out), "--no-progress", "--workers", "0",
                             "--run-id", "slow-run", *devices],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():  # only waits for the pause; nothing is timed
            assert slow.poll() is None, slow.stderr.read()
            assert time.monotonic() < deadline, "the slow run never reached its commit"
            time.sleep(0.1)
        lease = json.loads((out / "_leases" / "slow-run.json").read_text())
        assert lease["pid"] == slow.pid and lease["host"] == socket.gethostname()
        fast = score_corpus(score_config(linear_model, [corpus_b], out))
        assert fast.files_scored == 1
        assert fast.reconciled["orphan_parts_removed"] == 0
        assert fast.reconciled["prune_skipped_for_runs"] == ["slow-run"]
        assert not (out / "_leases" / f"{fast.run_id}.json").exists()  # its own lease is gone
        release.touch()
        _, err = slow.communicate(timeout=300)
        assert slow.returncode == 0, err
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait()
    assert not list((out / "_leases").iterdir())
    assert sorted(scores_table(out)["id"].to_pylist()) == sorted(sample_table.slice(0, 400)["id"].to_pylist())
    assert aggregate(out).input_rows == 400
    for inputs in ([corpus_a], [corpus_b], [corpus_a, corpus_b]):
        assert score_corpus(score_config(linear_model, inputs, out)).files_scored == 0
    assert scores_table(out).num_rows == 400


@pytest.mark.slow
def test_a_stale_lease_of_a_killed_run_is_ignored_and_removed(linear_model, sample_table, tmp_path):
    """A lease whose heartbeat stopped long ago (a killed run) does not stop pruning and is cleaned up, and a
    lease of a process that no longer exists on this host counts as dead at once."""
    corpus = _corpus(tmp_path / "in", sample_table, [(0, 20)])
    out = tmp_path / "out"
    score_corpus(score_config(linear_model, [corpus], out))
    orphan = out / "scores" / next(p.name for p in (out / "scores").iterdir()) / "part-0123456789abcdef0123.parquet"
    pq.write_table(sample_table.slice(0, 2), orphan)
    leases = out / "_leases"
    leases.mkdir(exist_ok=True)  # the first run left it, empty
    old = {"run_id": "killed-long-ago", "pid": 1, "host": "elsewhere", "started": time.time() - 7200,
           "heartbeat": time.time() - 3600}
    (leases / "killed-long-ago.json").write_text(json.dumps(old))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = {"run_id": "killed-now", "pid": gone.pid, "host": socket.gethostname(),
            "pid_namespace": os.readlink("/proc/self/ns/pid"), "started": time.time(), "heartbeat": time.time()}
    (leases / "killed-now.json").write_text(json.dumps(dead))
    again = score_corpus(score_config(linear_model, [corpus], out))
    assert again.reconciled["orphan_parts_removed"] == 1 and again.reconciled["prune_skipped_for_runs"] == []
    assert not orphan.exists() and not list(leases.iterdir())


# ------------------------------------------------------------------ row 2: a score part lost, its entry kept

@pytest.mark.slow
def test_a_deleted_part_is_rescored_and_never_silently_undercounted(linear_model, sample_table, tmp_path):
    corpus = _corpus(tmp_path / "in", sample_table, [(0, 50), (50, 50)])
    out = tmp_path / "out"
    score_corpus(score_config(linear_model, [corpus], out))
    lost = next(e for e in read_manifest(str(out)) if e["input"].endswith("0.parquet"))
    Path(lost["scores_part"]).unlink()
    with pytest.raises(UserError, match=r"1 manifest entr.*50 of 100 rows.*run `score`"):
        aggregate(out)
    assert pending_files(score_config(linear_model, [corpus], out)) == [str(corpus / "0.parquet")]
    again = score_corpus(score_config(linear_model, [corpus], out))
    assert (again.files_scored, again.files_skipped, again.scored_rows) == (1, 1, 50)
    assert again.reconciled["missing_parts"] == 1
    assert aggregate(out).input_rows == 100
    assert score_corpus(score_config(linear_model, [corpus], out)).files_scored == 0


@pytest.mark.slow
def test_an_entry_whose_part_holds_fewer_rows_is_refused_by_aggregate(linear_model, sample_table, tmp_path):
    """A part replaced by hand with fewer rows than its entry promises: aggregate says so, in one line."""
    corpus, out = _scored(linear_model, sample_table, tmp_path, [(0, 30)])
    (entry,) = read_manifest(str(out))
    pq.write_table(pq.read_table(entry["scores_part"]).slice(0, 10), entry["scores_part"])
    run = run_cli("aggregate", "--scores", out, "--output", tmp_path / "agg")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert run.stderr.strip().splitlines()[-1].startswith("error: ") and "10 of 30 rows" in run.stderr


# ------------------------------------------------------------------ row 16: a damaged manifest entry

@pytest.mark.slow
def test_a_truncated_manifest_entry_is_rescored_without_a_traceback(linear_model, sample_table, tmp_path):
    corpus, out = _scored(linear_model, sample_table, tmp_path, [(0, 40), (40, 30)])
    entry = _entry_file(out, "0.parquet")
    entry.write_text(entry.read_text()[:40])
    run = run_cli("aggregate", "--scores", out, "--output", tmp_path / "agg")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and entry.name in last and "run `score`" in last, last
    run = run_cli("score", "--model", linear_model, "--input", corpus, "--output", out, "--no-progress",
                  "--workers", "0")
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr[-2000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert (summary["files_scored"], summary["files_skipped"]) == (1, 1)
    assert summary["reconciled"]["damaged_entries"] == 1
    assert json.loads(entry.read_text())["rows_scored"] == 40
    assert aggregate(out).input_rows == 70


@pytest.mark.slow
def test_a_damaged_entry_of_a_file_gone_from_the_corpus_is_retired(linear_model, sample_table, tmp_path):
    """An entry with keys missing whose file this run does not score: reconcile retires it and counts it."""
    corpus, out = _scored(linear_model, sample_table, tmp_path, [(0, 20), (20, 20)])
    entry = _entry_file(out, "0.parquet")
    entry.write_text(json.dumps({"input": str(corpus / "0.parquet")}))
    again = score_corpus(score_config(linear_model, [corpus / "1.parquet"], out))
    assert (again.files_scored, again.reconciled["damaged_entries"]) == (0, 1)
    assert not entry.exists() and len(read_manifest(str(out))) == 1


# ------------------------------------------------------------------ row 15: file:// rewritten in place

@pytest.mark.slow
def test_file_url_rewritten_with_same_size_and_mtime_is_rescored(linear_model, sample_table, tmp_path):
    corpus = tmp_path / "in"
    corpus.mkdir()
    path = corpus / "a.parquet"
    rows = sample_table.slice(0, 10)
    pq.write_table(rows, path, compression="none", use_dictionary=False, write_statistics=False)
    out = tmp_path / "out"
    url = f"file://{path}"
    assert score_corpus(score_config(linear_model, [url], out)).files_scored == 1
    before = os.stat(path)
    raw = path.read_bytes()
    changed = raw.replace(b" the ", b" xyz ")  # other words, same length: same size
    assert len(changed) == len(raw) and changed != raw
    path.write_bytes(changed)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_size == before.st_size and os.stat(path).st_mtime_ns == before.st_mtime_ns
    again = score_corpus(score_config(linear_model, [url], out))
    assert (again.files_scored, again.reconciled["retired_files"]) == (1, 1)
    assert score_corpus(score_config(linear_model, [url], out)).files_scored == 0


def test_a_lease_beats_until_released_and_never_removes_a_namesakes(tmp_path, monkeypatch):
    from allsides_batch.storage import leases

    monkeypatch.setattr(leases, "HEARTBEAT_S", 0.05)
    lease = leases.hold(str(tmp_path), "run-1")
    path = tmp_path / "_leases" / "run-1.json"
    first = json.loads(path.read_text())["heartbeat"]
    deadline = time.monotonic() + 60
    while json.loads(path.read_text())["heartbeat"] == first:  # only waits for the next beat
        assert time.monotonic() < deadline, "the heartbeat never refreshed the lease"
        time.sleep(0.05)
    assert leases.other_live_runs(str(tmp_path)) == ["run-1"] and leases.other_live_runs(str(tmp_path), "run-1") == []
    lease.release()
    assert not path.exists()
    retry = leases.hold(str(tmp_path), "run-1")  # a retry under the same run id while an old attempt ends
    lease.release()
    assert path.exists()
    retry.release()
    assert not path.exists()
