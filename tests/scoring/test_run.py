"""The streaming scorer end to end on the tiny DistilBERT and real AllSides articles in tmp_path."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import torch
from hf_reference import plain_chunk_probs
from scoring_runs import score_config

from allsides_batch.config import ScoreConfig
from allsides_batch.errors import UserError
from allsides_batch.scoring import STALL_ENV, pending_files, score_corpus
from allsides_batch.storage.corpus import read_manifest

MAXLEN = 64
RUN_COLUMNS = ["run_id", "scored_at"]


@pytest.fixture(scope="module")
def corpus(articles_sample, tmp_path_factory) -> Path:
    """Three input files of real articles (12 + 9 + 7 rows) in a hive-style directory."""
    table = pq.read_table(articles_sample).slice(0, 28)
    root = tmp_path_factory.mktemp("corpus")
    for i, (start, n) in enumerate([(0, 12), (12, 9), (21, 7)]):
        (root / f"day={i}").mkdir()
        pq.write_table(table.slice(start, n), root / f"day={i}" / "part.parquet")
    return root


def _cfg(model, inputs, out, **kw) -> ScoreConfig:
    return score_config(model, inputs, out, **{"max_length": MAXLEN, "device": "cpu", "batch_tokens": 4 * MAXLEN,
                                               **kw})


def _read(path) -> pa.Table:
    # ds.dataset reads the hive key model_id=… as the string the files also hold (pq.read_table would
    # infer a dictionary type for it and refuse to merge the two).
    return ds.dataset(str(path), partitioning="hive").to_table()


def _scores(out) -> pa.Table:
    return _read(Path(out) / "scores").sort_by("id")


def _reference(model_dir, table: pa.Table) -> dict[str, np.ndarray]:
    """One article at a time, plain tokenizer truncation, no batching: the probabilities to match."""
    from allsides_batch.models.hub import load_classifier, load_tokenizer
    from allsides_batch.text.prep import TextPrep, prepare_text

    model, tok = load_classifier(model_dir).eval(), load_tokenizer(model_dir)
    prep = TextPrep.load(model_dir)
    out = {}
    with torch.inference_mode():
        for row in table.to_pylist():
            enc = tok(prepare_text(row["title"], row["text"], prep), truncation=True, max_length=MAXLEN,
                      return_tensors="pt")
            out[row["id"]] = torch.softmax(model(**enc).logits[0], -1).numpy()
    return out


def _assert_matches_reference(scores: pa.Table, ref: dict[str, np.ndarray]) -> None:
    assert sorted(scores["id"].to_pylist()) == sorted(ref)
    for row in scores.to_pylist():
        expected = ref[row["id"]]
        np.testing.assert_allclose([row["p_left"], row["p_center"], row["p_right"]], expected, atol=2e-5)
        assert row["label"] == ("left", "center", "right")[int(np.argmax(expected))]
        assert row["bias_score"] == pytest.approx(row["p_right"] - row["p_left"], abs=1e-6)


@pytest.mark.slow
def test_bucketed_batches_equal_one_at_a_time(tiny_model_dir, corpus, tmp_path):
    summary = score_corpus(_cfg(tiny_model_dir, [corpus], tmp_path / "out"))
    table = pq.read_table(corpus, columns=["id", "title", "text"])
    assert (summary.input_rows, summary.scored_rows, summary.quarantined_rows) == (28, 28, 0)
    assert summary.files_scored == 3 and len(summary.parts) == 3
    scores = _scores(tmp_path / "out")
    _assert_matches_reference(scores, _reference(tiny_model_dir, table))
    assert set(scores["truncated"].to_pylist()) == {True}  # real articles all exceed 64 tokens
    assert set(scores["n_tokens"].to_pylist()) == {MAXLEN}
    assert scores["url"].null_count == 0 and scores["source_url"].null_count == 0  # passed through for aggregate
    run = json.loads((tmp_path / "out" / "runs" / f"{summary.run_id}.json").read_text())
    assert run["scored_rows"] == 28


@pytest.mark.slow
def test_devices_and_worker_processes_change_nothing(tiny_model_dir, corpus, tmp_path):
    """Two CPU device processes, each with a tokenizer process: same probabilities, every id once."""
    summary = score_corpus(_cfg(tiny_model_dir, [corpus], tmp_path / "out", devices="cpu:2", workers=1))
    assert summary.devices == ["cpu", "cpu"] and summary.scored_rows == 28
    _assert_matches_reference(_scores(tmp_path / "out"),
                              _reference(tiny_model_dir, pq.read_table(corpus, columns=["id", "title", "text"])))


@pytest.mark.slow
def test_rerun_adds_nothing_and_new_files_are_scored(tiny_model_dir, corpus, tmp_path):
    inputs = tmp_path / "in"
    shutil.copytree(corpus, inputs)
    cfg = _cfg(tiny_model_dir, [inputs], tmp_path / "out")
    first = score_corpus(cfg)
    before = _scores(tmp_path / "out").drop_columns(RUN_COLUMNS)
    again = score_corpus(cfg)
    assert (again.files_scored, again.files_skipped, again.input_rows) == (0, 3, 0)
    assert _scores(tmp_path / "out").drop_columns(RUN_COLUMNS).equals(before)
    assert pending_files(cfg) == []
    new = inputs / "day=9" / "part.parquet"
    new.parent.mkdir()
    pq.write_table(pq.read_table(corpus / "day=0").slice(0, 2).set_column(
        0, "id", pa.array(["new-1", "new-2"])), new)
    assert pending_files(cfg) == [str(new)]
    third = score_corpus(cfg)
    assert (third.files_scored, third.files_skipped, third.scored_rows) == (1, 3, 2)
    assert _scores(tmp_path / "out").num_rows == first.scored_rows + 2
    assert len(read_manifest(str(tmp_path / "out"))) == 4


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["part-committed", "manifest-committed"])
def test_killed_run_then_rerun_gives_the_clean_result(tiny_model_dir, corpus, tmp_path, stage):
    clean = score_corpus(_cfg(tiny_model_dir, [corpus], tmp_path / "clean"))
    marker = tmp_path / "stalled"
    env = {**os.environ, STALL_ENV: f"{stage}:2", STALL_ENV + "_MARKER": str(marker)}
    cmd = [sys.executable, "-m", "allsides_batch", "score", "--model", tiny_model_dir, "--input", str(corpus),
           "--output", str(tmp_path / "out"), "--max-length", str(MAXLEN), "--device", "cpu", "--no-progress",
           "--workers", "0", "--batch-tokens", str(4 * MAXLEN)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not marker.exists():  # the run pauses at the chosen point; this loop only waits for it
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "scorer never reached the stall point"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = read_manifest(str(tmp_path / "out"))
    assert len(done) == (1 if stage == "part-committed" else 2)
    parts = list((tmp_path / "out" / "scores").rglob("*.parquet"))
    assert len(parts) == 2  # the second part is committed either way; only the manifest says whether it is done
    rerun = score_corpus(_cfg(tiny_model_dir, [corpus], tmp_path / "out"))
    assert rerun.files_skipped == len(done) and rerun.files_scored == 3 - len(done)
    got = _scores(tmp_path / "out").drop_columns(RUN_COLUMNS + ["model_id"])
    want = _scores(tmp_path / "clean").drop_columns(RUN_COLUMNS + ["model_id"])
    assert got.num_rows == clean.scored_rows == 28
    assert got.equals(want)


def test_quarantine_every_bad_kind(tiny_model_dir, tmp_path, articles_sample):
    real = pq.read_table(articles_sample).slice(0, 3).to_pylist()
    good = {k: real[0][k] for k in ("title", "text", "source", "date", "url")}
    rows = [
        {**good, "id": "a"}, {**good, "id": None}, {**good, "id": "b", "text": None},
        {**good, "id": "c", "text": ""}, {**good, "id": "d", "text": " \n "}, {**good, "id": "a"},
        {**good, "id": "e", "text": real[1]["text"]},
    ]
    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), inp / "1-mixed.parquet")
    pq.write_table(pa.Table.from_pylist(rows[:0], schema=pa.Table.from_pylist(rows).schema), inp / "2-empty.parquet")
    pq.write_table(pa.table({"id": ["x", "y"], "source": ["s", "s"], "text": [1, 2]}), inp / "3-int-text.parquet")
    (inp / "4-garbage.parquet").write_bytes(b"this is not parquet at all")
    summary = score_corpus(_cfg(tiny_model_dir, [inp], tmp_path / "out"))
    assert summary.input_rows == summary.scored_rows + summary.quarantined_rows
    assert (summary.input_rows, summary.scored_rows, summary.quarantined_rows) == (7 + 0 + 2 + 1, 2, 8)
    assert summary.files_scored == 4
    q = _read(tmp_path / "out" / "quarantine")
    reasons = sorted(r.split(":")[0].split(" (")[0] for r in q["reason"].to_pylist())
    assert reasons == sorted(["null id", "null text", "empty text", "empty text", "duplicate id",
                              "text not a string", "text not a string", "unreadable file"])
    dup = q.filter(pc.equal(q["reason"], "duplicate id")).to_pylist()[0]
    assert (dup["id"], dup["row_index"], dup["input_file"].endswith("1-mixed.parquet")) == ("a", 5, True)
    assert sorted(_scores(tmp_path / "out")["id"].to_pylist()) == ["a", "e"]
    manifest = {Path(e["input"]).name: e for e in read_manifest(str(tmp_path / "out"))}
    assert manifest["2-empty.parquet"]["rows_in"] == 0
    assert {k: e["rows_in"] == e["rows_scored"] + e["rows_quarantined"] for k, e in manifest.items()} == {
        k: True for k in manifest}


def test_missing_column_and_unreadable_model_fail_before_any_work(tiny_model_dir, tmp_path, articles_sample):
    bad = tmp_path / "no-text.parquet"
    pq.write_table(pq.read_table(articles_sample).slice(0, 2).drop_columns(["text"]), bad)
    with pytest.raises(UserError, match="missing column.*text"):
        score_corpus(_cfg(tiny_model_dir, [bad], tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        score_corpus(_cfg(tmp_path / "empty-model", [articles_sample], tmp_path / "out"))
    assert not (tmp_path / "out").exists()

    from click.testing import CliRunner

    from allsides_batch.__main__ import app

    result = CliRunner().invoke(app, ["score", "--model", str(tmp_path / "empty-model"), "--input",
                                      str(articles_sample), "--output", str(tmp_path / "out")])
    assert result.exit_code == 2 and "no config.json" in result.output
    with pytest.raises(UserError, match="model directory not found"):
        score_corpus(_cfg(tmp_path / "no-such-model", [articles_sample], tmp_path / "out"))


def test_label_map_refusal_and_acceptance(tiny_model_dir, tmp_path, articles_sample):
    generic = tmp_path / "generic"
    shutil.copytree(tiny_model_dir, generic)
    conf = json.loads((generic / "config.json").read_text())
    conf["id2label"] = {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
    conf["label2id"] = {v: int(k) for k, v in conf["id2label"].items()}
    (generic / "config.json").write_text(json.dumps(conf))
    small = tmp_path / "small.parquet"
    pq.write_table(pq.read_table(articles_sample).slice(0, 4), small)
    with pytest.raises(UserError, match="label-map"):
        score_corpus(_cfg(generic, [small], tmp_path / "refused"))
    assert not (tmp_path / "refused").exists()
    # Mapped in reverse order: p_left must be the model's third output, p_right its first.
    score_corpus(_cfg(generic, [small], tmp_path / "mapped", label_map="LABEL_0=right,LABEL_1=center,LABEL_2=left"))
    score_corpus(_cfg(tiny_model_dir, [small], tmp_path / "plain"))
    mapped, plain = _scores(tmp_path / "mapped"), _scores(tmp_path / "plain")
    np.testing.assert_allclose(mapped["p_left"].to_numpy(), plain["p_right"].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(mapped["p_right"].to_numpy(), plain["p_left"].to_numpy(), atol=1e-6)
    assert mapped["model_id"][0] != plain["model_id"][0]


@pytest.mark.slow
def test_chunk_mode_end_to_end_scores_whole_articles(fine_tuned_dir, corpus, tmp_path):
    """score_corpus in chunk mode writes, for every article, the probabilities of the plain window-by-window
    loop of hf_reference.plain_chunk_probs (the Hugging Face tokenizer and model, one window at a
    time, averaged weighted by content tokens), every token counted once and nothing marked truncated."""
    from allsides_batch.models.hub import load_tokenizer
    from allsides_batch.scoring.engine import prepare_rows
    from allsides_batch.text.prep import TextPrep

    src = corpus / "day=2" / "part.parquet"
    summary = score_corpus(_cfg(fine_tuned_dir, [src], tmp_path / "out", long_text="chunk", stride=16))
    scores = _scores(tmp_path / "out")
    table = pq.read_table(src).sort_by("id")
    assert scores["id"].to_pylist() == table["id"].to_pylist()
    texts = prepare_rows(TextPrep.load(fine_tuned_dir), table["title"].to_pylist(), table["text"].to_pylist(),
                         table["source"].to_pylist())
    expected, n_windows = plain_chunk_probs(fine_tuned_dir, texts, MAXLEN, 16, 64)
    assert summary.scored_rows == 7 and min(n_windows) > 1 and max(n_windows) < 64
    assert not any(scores["truncated"].to_pylist())
    tok = load_tokenizer(fine_tuned_dir)
    assert scores["n_tokens"].to_pylist() == [len(tok(t)["input_ids"]) for t in texts]
    got = np.stack([scores[c].to_numpy() for c in ("p_left", "p_center", "p_right")], 1)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert scores["label"].to_pylist() == [("left", "center", "right")[i] for i in expected.argmax(1)]


@pytest.mark.slow
def test_file_damaged_part_way_keeps_the_rows_read_before_the_damage(tiny_model_dir, tmp_path):
    """A file whose footer reads but whose second row group is corrupt: the 300 rows of the first group
    are scored, the 300 of the damaged group are quarantined one by one with their row index, so the
    counts add up to the file's rows."""
    n = 600
    table = pa.table({"id": [f"i{i}" for i in range(n)], "source": ["s"] * n,
                      "text": [f"article number {i} about the vote. " * 10 for i in range(n)]})
    path = tmp_path / "in" / "corrupt.parquet"
    path.parent.mkdir()
    pq.write_table(table, path, row_group_size=300, compression="snappy")
    meta = pq.ParquetFile(path).metadata
    raw = bytearray(path.read_bytes())
    col = meta.row_group(1).column(2)
    start = col.dictionary_page_offset or col.data_page_offset
    for i in range(start + 30, min(start + col.total_compressed_size, len(raw) - meta.serialized_size - 8)):
        raw[i] = 0xFF
    path.write_bytes(bytes(raw))
    good = table.slice(0, 3).set_column(0, "id", pa.array(["ok-1", "ok-2", "ok-3"]))
    pq.write_table(good, tmp_path / "in" / "good.parquet")
    summary = score_corpus(_cfg(tiny_model_dir, [tmp_path / "in"], tmp_path / "out"))
    assert (summary.input_rows, summary.scored_rows, summary.quarantined_rows) == (603, 303, 300)
    assert sorted(_scores(tmp_path / "out")["id"].to_pylist()) == sorted(
        ["ok-1", "ok-2", "ok-3"] + [f"i{i}" for i in range(300)])
    q = _read(tmp_path / "out" / "quarantine").to_pylist()
    assert sorted(r["row_index"] for r in q) == list(range(300, 600))
    assert all(r["reason"].startswith("unreadable row group 1") for r in q)
