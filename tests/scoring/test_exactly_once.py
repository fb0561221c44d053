"""The scores directory is a function of the corpus as it is now, and hostile input never gives wrong
output: one test per reproduced failure (the reliability table in docs/scoring.md), a hostile-input
matrix through the CLI, and SIGKILL at random moments against a clean run.

The model is a real linear model trained on 600 shared articles (seconds); scoring runs the production
path (plan, tokenizer workers, parts, manifest, reconcile)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scoring_runs import REPO, aggregate, file_size_limit, run_cli, score_config, scores_table

from allsides_batch.analysis.aggregate import outlet_aggregates
from allsides_batch.config import AggregateConfig
from allsides_batch.errors import UserError
from allsides_batch.scoring import score_corpus
from allsides_batch.storage.corpus import read_manifest

# The scorer end to end on a trained model, subprocesses and SIGKILL rounds: slow.
pytestmark = pytest.mark.slow


# ------------------------------------------------------------------ identity: the corpus as it is now

@pytest.mark.slow
def test_rewritten_file_supersedes_its_old_part(linear_model, sample_table, tmp_path):
    """Table row 2: a file rewritten in place with fewer rows, scored again: only the new rows remain."""
    corpus = tmp_path / "in"
    corpus.mkdir()
    pq.write_table(sample_table.slice(0, 150), corpus / "a.parquet")
    pq.write_table(sample_table.slice(150, 20), corpus / "b.parquet")
    out = tmp_path / "out"
    score_corpus(score_config(linear_model, [corpus], out))
    assert scores_table(out).num_rows == 170
    pq.write_table(sample_table.slice(0, 50), corpus / "a.parquet")
    again = score_corpus(score_config(linear_model, [corpus], out))
    assert again.files_scored == 1 and again.reconciled["retired_files"] == 1
    assert again.reconciled["retired_rows"] == 150
    assert sorted(scores_table(out)["id"].to_pylist()) == sorted(sample_table.slice(0, 50)["id"].to_pylist()
                                                            + sample_table.slice(150, 20)["id"].to_pylist())
    assert len(read_manifest(str(out))) == 2
    assert aggregate(out).aggregated_articles == 70


@pytest.mark.slow
def test_deleted_file_leaves_the_aggregate_then_is_retired(linear_model, sample_table, tmp_path):
    """Table row 3: a file deleted from the corpus no longer counts in `aggregate`, even before the next
    score run; that run retires its rows."""
    corpus = tmp_path / "in"
    corpus.mkdir()
    pq.write_table(sample_table.slice(0, 40), corpus / "a.parquet")
    pq.write_table(sample_table.slice(40, 30), corpus / "b.parquet")
    out = tmp_path / "out"
    score_corpus(score_config(linear_model, [corpus], out))
    (corpus / "a.parquet").unlink()
    agg = aggregate(out)
    assert (agg.aggregated_articles, agg.files_left_corpus, agg.rows_left_corpus) == (30, 1, 40)
    assert any("deleted or rewritten" in n for n in agg.notes)
    again = score_corpus(score_config(linear_model, [corpus], out))
    assert (again.files_scored, again.reconciled["retired_files"]) == (0, 1)
    assert scores_table(out).num_rows == 30 and len(list((out / "scores").rglob("*.parquet"))) == 1
    assert aggregate(out).files_left_corpus == 0


def test_touched_file_and_symlinked_corpus_are_not_scored_twice(linear_model, sample_table, tmp_path):
    """Table row 4: `touch`, or the same corpus named through a symlink, is no new work."""
    corpus = tmp_path / "in"
    corpus.mkdir()
    pq.write_table(sample_table.slice(0, 30), corpus / "a.parquet")
    out = tmp_path / "out"
    score_corpus(score_config(linear_model, [corpus], out))
    os.utime(corpus / "a.parquet", (time.time() + 60, time.time() + 60))
    (tmp_path / "link").symlink_to(corpus)
    shutil.copy(corpus / "a.parquet", corpus / "copy-of-a.parquet")
    again = score_corpus(score_config(linear_model, [corpus, tmp_path / "link"], out))
    assert (again.files_scored, again.scored_rows, again.files_same_content) == (0, 0, 3)
    assert scores_table(out).num_rows == 30
    (corpus / "a.parquet").unlink()  # its copy still holds the content: the scores stay
    third = score_corpus(score_config(linear_model, [corpus], out))
    assert (third.files_scored, third.reconciled["retired_files"]) == (0, 0)
    assert [e["inputs"] for e in read_manifest(str(out))] == [
        [str(corpus / "copy-of-a.parquet"), str(tmp_path / "link" / "copy-of-a.parquet")]]
    assert aggregate(out).aggregated_articles == 30


@pytest.mark.slow
def test_content_change_that_keeps_size_and_mtime_is_rescored(linear_model, sample_table, tmp_path):
    """Table row 5: `cp -p` of other content with the same size and mtime is new work."""
    corpus = tmp_path / "in"
    corpus.mkdir()
    rows = sample_table.slice(0, 10)
    pq.write_table(rows, corpus / "a.parquet", compression="none", use_dictionary=False, write_statistics=False)
    out = tmp_path / "out"
    score_corpus(score_config(linear_model, [corpus], out))
    before = os.stat(corpus / "a.parquet")
    raw = (corpus / "a.parquet").read_bytes()
    staged = tmp_path / "staged.parquet"
    staged.write_bytes(raw.replace(b" the ", b" xyz "))  # other words, same length: same size
    assert staged.stat().st_size == before.st_size and staged.read_bytes() != raw
    assert pq.read_table(staged).num_rows == 10
    os.utime(staged, ns=(before.st_atime_ns, before.st_mtime_ns))
    subprocess.run(["cp", "-p", str(staged), str(corpus / "a.parquet")], check=True)
    assert os.stat(corpus / "a.parquet").st_mtime_ns == before.st_mtime_ns
    again = score_corpus(score_config(linear_model, [corpus], out))
    assert (again.files_scored, again.reconciled["retired_files"]) == (1, 1)
    scores = scores_table(out)
    assert sorted(scores["id"].to_pylist()) == sorted(rows["id"].to_pylist())
    (entry,) = read_manifest(str(out))
    assert entry["fingerprint"]["sha256"] == hashlib.sha256(staged.read_bytes()).hexdigest()


def test_literal_path_with_glob_characters_is_that_file(linear_model, sample_table, tmp_path):
    """Table row 6: `paths/[1].parquet` names that file, not `paths/1.parquet`."""
    paths = tmp_path / "paths"
    paths.mkdir()
    pq.write_table(sample_table.slice(0, 5), paths / "[1].parquet")
    pq.write_table(sample_table.slice(5, 7), paths / "1.parquet")
    out = tmp_path / "out"
    s = score_corpus(score_config(linear_model, [paths / "[1].parquet"], out))
    assert s.scored_rows == 5
    assert [Path(e["input"]).name for e in read_manifest(str(out))] == ["[1].parquet"]


def test_duplicate_ids_across_files_follow_one_rule(linear_model, sample_table, tmp_path):
    """Table row 15: an id in two files under two outlets is counted and left out, never moved to the
    other outlet; an id repeated under the same outlet counts once whatever the file order."""
    corpus = tmp_path / "in"
    corpus.mkdir()
    base = sample_table.slice(0, 40)
    pq.write_table(base, corpus / "a.parquet")
    ids, sources = base["id"].to_pylist(), base["source"].to_pylist()
    other = next(s for s in sample_table["source"].to_pylist() if s != sources[0])
    bogus = base.slice(0, 2).set_column(1, "source", pa.array([other, sources[1]]))
    pq.write_table(bogus, corpus / "b.parquet")  # id 0 under another outlet; id 1 repeated as is
    out = tmp_path / "out"
    score_corpus(score_config(linear_model, [corpus], out))
    agg = aggregate(out, min_articles=1)
    assert (agg.conflicting_ids, agg.conflicting_rows, agg.conflicting_examples) == (1, 2, [ids[0]])
    assert agg.duplicate_rows == 1 and agg.aggregated_articles == 39
    table = pq.read_table(agg.output_path).to_pydict()
    counts = dict(zip(table["outlet"], table["n_articles"]))
    assert other not in counts or counts[other] == sources.count(other)
    assert counts[sources[0]] == sources.count(sources[0]) - 1


def test_non_finite_scores_never_reach_an_outlet(tmp_path):
    """Table row 9: NaN confidence or ±inf bias_score rows are counted and left out; the outlet's mean,
    interval and label come from its valid rows."""
    from allsides_batch.schema import SCORES_SCHEMA

    n = 6
    bias = [0.5, 0.5, 0.5, 0.5, float("inf"), float("-inf")]
    conf = [0.9, 0.9, float("nan"), 0.9, 0.9, 0.9]
    cols = {f.name: pa.nulls(n, f.type) for f in SCORES_SCHEMA}
    cols.update(id=pa.array([f"a{i}" for i in range(n)]), source=pa.array(["Outlet"] * n),
                date=pa.array(["2026-11-01"] * n), label=pa.array(["right"] * n),
                bias_score=pa.array(bias, pa.float32()),
                confidence=pa.array(conf, pa.float32()), model_id=pa.array(["m"] * n),
                scored_at=pa.array([0] * n, pa.timestamp("us", tz="UTC")))
    (tmp_path / "scores").mkdir()
    pq.write_table(pa.table(cols, schema=SCORES_SCHEMA), tmp_path / "scores" / "part-x.parquet")
    agg = outlet_aggregates(AggregateConfig(scores=str(tmp_path), output=str(tmp_path / "agg"), min_articles=1))
    assert (agg.invalid_score_rows, agg.aggregated_articles) == (3, 3)
    row = pq.read_table(agg.output_path).to_pylist()[0]
    assert row["n_articles"] == 3 and row["mean_bias_score"] == pytest.approx(0.5)
    assert np.isfinite(row["ci95_low"]) and row["outlet_label"] == "right"


# --------------------------------------------------------------------------- errors: one line, exit 2

def _one_error_line(run: subprocess.CompletedProcess, pattern: str) -> None:
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert "Traceback" not in run.stderr and lines[-1].startswith("error: "), run.stderr[-2000:]
    assert pattern in lines[-1], lines[-1]


@pytest.mark.slow
def test_run_id_and_device_are_validated(linear_model, sample_table, tmp_path):
    """Table rows 7 and 8 (--device garbage): refused before anything is written."""
    inp = tmp_path / "in.parquet"
    pq.write_table(sample_table.slice(0, 3), inp)
    with pytest.raises(UserError, match="run_id: must be a plain name"):
        score_config(linear_model, [inp], tmp_path / "out", run_id="../../../x")
    run = run_cli("score", "--model", linear_model, "--input", inp, "--output", tmp_path / "out",
                  "--run-id", "../../../x")
    _one_error_line(run, "run_id: must be a plain name")
    run = run_cli("score", "--model", linear_model, "--input", inp, "--output", tmp_path / "out", "--device", "garbage")
    _one_error_line(run, "device: must be auto, cpu, cuda or cuda:N")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "x.json").exists()


@pytest.mark.slow
def test_read_only_and_full_output_fail_in_one_line_and_leave_nothing(linear_model, sample_table, tmp_path,
                                                                      read_only_dir):
    """Table row 8: read-only output and a full disk (a file size limit stands in for it)."""
    inp = tmp_path / "in.parquet"
    pq.write_table(sample_table, inp)
    run = run_cli("score", "--model", linear_model, "--input", inp, "--output", read_only_dir / "out", "--no-progress")
    _one_error_line(run, "cannot write")
    out = tmp_path / "out"
    run = run_cli("score", "--model", linear_model, "--input", inp, "--output", out, "--no-progress",
                  preexec=file_size_limit(20_000))
    _one_error_line(run, "cannot write")
    leftovers = [p for p in out.rglob("*") if p.is_file() and (p.name.startswith(".") or ".tmp" in p.name)]
    assert leftovers == [] and not list(out.rglob("part-*.parquet")) and not list(out.rglob("_manifest/**/*.json"))


# ----------------------------------------------------------------------------- hostile-input matrix

def _write_case(case: str, corpus: Path, sample_table: pa.Table) -> None:
    good = sample_table.slice(0, 20)
    if case == "corrupt":
        raw = bytearray(os.urandom(4000))
        (corpus / "corrupt.parquet").write_bytes(bytes(raw))
    elif case == "truncated":
        pq.write_table(good, corpus / "t.parquet")
        data = (corpus / "t.parquet").read_bytes()
        (corpus / "t.parquet").write_bytes(data[: len(data) // 2])
    elif case == "empty":
        (corpus / "empty.parquet").write_bytes(b"")
    elif case == "zero-rows":
        pq.write_table(good.slice(0, 0), corpus / "zero.parquet")
    elif case == "wrong-types":
        pq.write_table(pa.table({"id": pa.array(range(5)), "source": ["s"] * 5, "text": pa.array(range(5))}),
                       corpus / "types.parquet")
    elif case == "nan-inf":
        pq.write_table(pa.table({"id": ["a", "b", "c"], "source": ["s"] * 3,
                                 "text": pa.array([float("nan"), float("inf"), 1.5])}), corpus / "nan.parquet")
    elif case == "huge-text":
        pq.write_table(pa.table({"id": ["h"], "source": ["s"], "text": ["the senate vote " * 330_000]}),
                       corpus / "huge.parquet")
    elif case == "binary-text":
        pq.write_table(pa.table({"id": ["b1", "b2"], "source": ["s", "s"],
                                 "text": pa.array([b"\x00\xff\xfe binary", b"\x89PNG\r\n"], pa.binary())}),
                       corpus / "binary.parquet")
    elif case == "control-characters":
        pq.write_table(pa.table({"id": ["c1", "c2"], "source": ["s", "s"],
                                 "text": ["nul \x00 inside", "\u202e right-to-left \ufffd and emoji \U0001F600"]}),
                       corpus / "ctrl.parquet")
    elif case == "spaces and [brackets]":
        (corpus / "dir with spaces [x]").mkdir()
        pq.write_table(good, corpus / "dir with spaces [x]" / "file [1] *.parquet")
    else:
        raise AssertionError(case)


CASES = ["corrupt", "truncated", "empty", "zero-rows", "wrong-types", "nan-inf", "huge-text", "binary-text",
         "control-characters", "spaces and [brackets]"]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_hostile_input_matrix(case, linear_model, sample_table, tmp_path):
    """Every case ends with each file's rows = scored + quarantined (exit 0), or one `error:` line and
    exit 2; never a traceback; a good file beside it is scored as usual."""
    corpus = tmp_path / "in"
    corpus.mkdir()
    _write_case(case, corpus, sample_table)
    pq.write_table(sample_table.slice(100, 10), corpus / "good.parquet")
    out = tmp_path / "out"
    run = run_cli("score", "--model", linear_model, "--input", corpus, "--output", out, "--no-progress")
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    if run.returncode == 2:
        _one_error_line(run, "")
        return
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["input_rows"] == summary["scored_rows"] + summary["quarantined_rows"]
    for entry in read_manifest(str(out)):
        assert entry["rows_in"] == entry["rows_scored"] + entry["rows_quarantined"]
        try:
            expected = pq.ParquetFile(entry["input"]).metadata.num_rows
        except Exception:  # noqa: BLE001 - unreadable: one quarantine row stands for the file
            expected = 1
        assert entry["rows_in"] == expected, entry
    scores = scores_table(out)
    assert set(sample_table.slice(100, 10)["id"].to_pylist()) <= set(scores["id"].to_pylist())
    probs = np.stack([scores[c].to_numpy() for c in ("p_left", "p_center", "p_right")], 1)
    assert np.isfinite(probs).all() and np.allclose(probs.sum(1), 1, atol=1e-5)


# ----------------------------------------------------------------------- SIGKILL at random moments

def _corpus_with_quarantine(sample_table: pa.Table, root: Path, files: int = 6) -> Path:
    corpus = root / "in"
    corpus.mkdir()
    per = sample_table.num_rows // files
    for i in range(files):
        part = sample_table.slice(i * per, per)
        text = part["text"].to_pylist()
        text[0] = "   "                     # empty text: a quarantine row in every file
        ids = part["id"].to_pylist()
        ids[1] = ids[2]                      # a duplicate id within the file: another
        part = part.set_column(0, "id", pa.array(ids)).set_column(3, "text", pa.array(text))
        pq.write_table(part, corpus / f"part-{i}.parquet", row_group_size=25)
    return corpus


def _content(out: Path, table: str) -> list[tuple]:
    files = sorted((out / table).rglob("part-*.parquet"))
    rows = pa.concat_tables([pq.read_table(f) for f in files]).to_pylist() if files else []
    drop = {"run_id", "scored_at"}
    return sorted(tuple((k, round(v, 6) if isinstance(v, float) else v) for k, v in r.items() if k not in drop)
                  for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("devices", [None, "cpu:2"])
def test_random_sigkill_rounds_end_equal_to_a_clean_run(devices, linear_model, sample_table, tmp_path):
    corpus = _corpus_with_quarantine(sample_table, tmp_path)
    extra = ["--no-progress", "--workers", "0"] + (["--devices", devices] if devices else [])
    clean = tmp_path / "clean"
    assert run_cli("score", "--model", linear_model, "--input", corpus, "--output", clean, *extra).returncode == 0
    out = tmp_path / "killed"
    rng = random.Random(12345 if devices is None else 54321)
    for _ in range(3):
        p = subprocess.Popen([sys.executable, "-m", "allsides_batch", "score", "--model", linear_model, "--input",
                              str(corpus), "--output", str(out), *extra], cwd=REPO, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 8.0))
        os.killpg(p.pid, signal.SIGKILL)   # the whole group: parent, device and tokenizer processes
        p.wait()
    final = run_cli("score", "--model", linear_model, "--input", corpus, "--output", out, *extra)
    assert final.returncode == 0, final.stderr[-2000:]
    assert _content(out, "scores") == _content(clean, "scores")
    assert _content(out, "quarantine") == _content(clean, "quarantine")
    assert sorted(e["key"] for e in read_manifest(str(out))) == sorted(e["key"] for e in read_manifest(str(clean)))
    # killed runs leave at most hidden temporary files, which no reader lists (pruned after an hour)
    assert all(p.name.startswith(".") and p.name.endswith(".tmp") for p in out.rglob("*")
               if p.is_file() and p.suffix != ".json" and not p.name.startswith("part-"))
