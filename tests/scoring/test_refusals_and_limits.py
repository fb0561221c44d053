"""Refusals and limits of the scorer and trainer on inputs that used to pass silently or stall: a model
directory without its tokenizer, pickle-only base weights, a megabyte article in chunk mode, dictionary
and large string columns, and device processes outliving a killed parent."""

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
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from scoring_runs import score_config

from allsides_batch.__main__ import app
from allsides_batch.config import ScoreConfig
from allsides_batch.errors import UserError
from allsides_batch.scoring import STALL_ENV, score_corpus

MAXLEN = 64


def _cfg(model, inputs, out, **kw) -> ScoreConfig:
    return score_config(model, inputs, out, **{"max_length": MAXLEN, "device": "cpu", "batch_tokens": 8 * MAXLEN,
                                               **kw})


def _scores(out) -> pa.Table:
    return ds.dataset(str(Path(out) / "scores"), partitioning="hive").to_table().sort_by("id")


@pytest.fixture(scope="module")
def small(articles_sample, tmp_path_factory) -> Path:
    """Six real labelled articles."""
    path = tmp_path_factory.mktemp("small") / "small.parquet"
    pq.write_table(pq.read_table(articles_sample).slice(0, 6), path)
    return path


def _copy_without_tokenizer(model_dir: str, dest: Path) -> Path:
    dest.mkdir()
    for name in os.listdir(model_dir):
        if name in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(model_dir, name), dest / name)
    return dest


# ---- 1. a model directory needs a tokenizer that fits it ------------------------------------------------
def test_score_refuses_a_model_without_tokenizer_files(tiny_model_dir, small, tmp_path):
    bare = _copy_without_tokenizer(tiny_model_dir, tmp_path / "bare")
    runner = CliRunner()
    # Without --max-length the plan reads the tokenizer for its limit; with it, the scorer is the first to.
    for extra in ([], ["--max-length", str(MAXLEN)]):
        result = runner.invoke(app, ["score", "--model", str(bare), "--input", str(small), "--output",
                                     str(tmp_path / "out"), "--device", "cpu", "--workers", "0",
                                     "--no-progress", *extra])
        assert result.exit_code == 2, result.output
        assert "no tokenizer" in result.output
        assert "tokenizer.json" in result.output and "vocab.txt" in result.output  # the files it looked for
        assert "save_pretrained" in result.output  # what to do
        assert not (tmp_path / "out" / "scores").exists()
    result = runner.invoke(app, ["evaluate", "--model", str(bare), "--data", str(small), "--device", "cpu",
                                 "--workers", "0", "--no-progress", "--max-length", str(MAXLEN)])
    assert result.exit_code == 2 and "no tokenizer" in result.output, result.output

    from allsides_batch.models.hub import check_complete

    with pytest.raises(UserError, match="no tokenizer"):
        check_complete(str(bare))
    check_complete(tiny_model_dir)  # complete: no error


def test_score_refuses_a_tokenizer_larger_than_the_embeddings(minilm_path, small, tmp_path):
    """The real 30,522-token tokenizer beside a model whose embedding table holds 1,000 rows: ids past the
    table would fail in the forward pass (or, on some kernels, read garbage)."""
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    from allsides_batch.models.identity import ID2LABEL, LABEL2ID

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=1000, dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                              max_position_embeddings=128, num_labels=3, id2label=ID2LABEL, label2id=LABEL2ID)
    out = tmp_path / "small-vocab"
    DistilBertForSequenceClassification(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(out)
    with pytest.raises(UserError, match=r"30522 tokens but the model's embeddings hold 1000 \(config.json "):
        score_corpus(_cfg(out, [small], tmp_path / "out"))
    assert not (tmp_path / "out" / "scores").exists()


def test_model_id_covers_the_tokenizer_files(tiny_model_dir, minilm_path, tmp_path):
    """The same weights and config with other tokenizer files turn text into other ids: another model_id."""
    from allsides_batch.models.identity import model_id

    base = model_id(tiny_model_dir)
    ids = set()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        other = tmp_path / name
        shutil.copytree(tiny_model_dir, other)
        path = other / name
        if name == "tokenizer.json":  # swap two words: other ids for the same text
            tok = json.loads(path.read_text())
            vocab = tok["model"]["vocab"]
            vocab["left"], vocab["right"] = vocab["right"], vocab["left"]
            path.write_text(json.dumps(tok))
        elif name == "tokenizer_config.json":
            conf = json.loads(path.read_text())
            conf["do_lower_case"] = not conf.get("do_lower_case", True)
            path.write_text(json.dumps(conf))
        else:  # a slow tokenizer's vocabulary beside the fast one
            assert not path.exists()
            shutil.copy(Path(minilm_path) / name, path)
        ids.add(model_id(str(other)))
    assert base not in ids and len(ids) == 3


# ---- 2. train loads base weights from safetensors only -------------------------------------------------
@pytest.mark.slow
def test_train_refuses_pickle_only_base_weights(minilm_path, small, tmp_path):
    import torch
    from transformers import AutoModel

    from allsides_batch.models.hub import load_base_model

    pickled = tmp_path / "pickled"
    model = AutoModel.from_pretrained(minilm_path)
    model.save_pretrained(pickled, safe_serialization=False)
    # transformers 5 writes safetensors whatever safe_serialization says; leave only the torch.save pickle.
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (pickled / name).exists():
            (pickled / name).unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(Path(minilm_path) / name, pickled / name)

    result = CliRunner().invoke(app, ["train", "--kind", "transformer", "--base-model", str(pickled),
                                      "--data", str(small), "--output", str(tmp_path / "out"),
                                      "--max-steps", "1", "--max-length", "32", "--device", "cpu",
                                      "--split", "random", "--val-fraction", "0.5", "--epochs", "1"])
    assert result.exit_code == 2, result.output
    assert "only pickle weights (pytorch_model.bin)" in result.output
    assert "convert to safetensors" in result.output
    assert not (tmp_path / "out" / "model.safetensors").exists()

    # The conversion the message gives works, and then the directory loads.
    converted = tmp_path / "converted"
    shutil.copytree(pickled, converted)
    AutoModel.from_pretrained(str(converted)).save_pretrained(str(converted))
    assert (converted / "model.safetensors").is_file()
    assert load_base_model(str(converted)).config.num_labels == 3


# ---- 3. chunk mode: at most max_windows windows, and only a head of a huge text tokenized ---------------
def _encoder(model_dir, max_windows, stride=16):
    from allsides_batch.models.hub import load_tokenizer
    from allsides_batch.scoring.engine import EncodeSpec
    from allsides_batch.text.prep import TextPrep

    spec = EncodeSpec(model_dir, TextPrep(), MAXLEN, "chunk", stride, None, max_windows)
    return load_tokenizer(model_dir), spec


def test_capped_windows_are_the_first_windows_of_an_uncapped_run(tiny_model_dir, articles_sample):
    from allsides_batch.scoring.engine import encode_texts

    texts = pq.read_table(articles_sample, columns=["text"])["text"].to_pylist()
    long_text = " ".join(texts[:8])  # several thousand tokens
    short_text = texts[0][:200]
    tok, capped = _encoder(tiny_model_dir, max_windows=5)
    _, uncapped = _encoder(tiny_model_dir, max_windows=10**6)
    a = encode_texts(tok, [long_text, short_text], capped)
    b = encode_texts(tok, [long_text, short_text], uncapped)
    assert a.truncated.tolist() == [True, False] and not b.truncated.any()
    n_long = int((b.owner == 0).sum())
    assert n_long > 5 and int((a.owner == 0).sum()) == 5
    for x, y in zip(a.seqs[:5], b.seqs[:5]):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.seqs[5], b.seqs[n_long])  # the short text: its one window, unchanged
    window = MAXLEN - 2
    assert a.n_tokens[0] == window + 4 * (window - 16) + 2  # the tokens the five windows cover, with specials
    assert a.n_tokens[1] == b.n_tokens[1]
    np.testing.assert_array_equal(a.weight[:5], b.weight[:5])


def test_head_tokens_are_a_prefix_of_the_whole_texts_tokens(tiny_model_dir):
    """Words of 300 characters are one [UNK] token each, far below the characters-per-token guess:
    the head is cut again, longer, until it yields the tokens asked for."""
    from allsides_batch.models.hub import load_tokenizer
    from allsides_batch.scoring.engine import head_tokens

    tok = load_tokenizer(tiny_model_dir)
    odd = " ".join(("x" * 300 if i % 2 else "word") for i in range(600))
    plain = "the senate voted on the bill " * 400
    whole = tok([odd, plain], add_special_tokens=False)["input_ids"]
    heads = head_tokens(tok, [odd, plain, "short text"], 100)
    for head, full in zip(heads, whole):
        assert 100 <= len(head) < len(full) and head == full[:len(head)]
    assert heads[2] == tok("short text", add_special_tokens=False)["input_ids"]


@pytest.mark.slow
def test_a_5mb_article_scores_quickly_in_chunk_mode(tiny_model_dir, articles_sample, tmp_path):
    from allsides_batch.scoring.engine import Scorer

    rows = pq.read_table(articles_sample).slice(0, 2).to_pylist()
    body = rows[0]["text"]
    huge = (body + "\n\n") * (5_000_000 // (len(body) + 2) + 1)
    assert len(huge) >= 5_000_000
    table = pa.table({"id": ["huge", "normal"], "source": [rows[0]["source"], rows[1]["source"]],
                      "title": [rows[0]["title"], rows[1]["title"]], "text": [huge, rows[1]["text"]]})
    path = tmp_path / "huge.parquet"
    pq.write_table(table, path)
    cfg = _cfg(tiny_model_dir, [path], tmp_path / "out", long_text="chunk", stride=16)
    assert cfg.max_windows == 64
    started = time.perf_counter()
    summary = score_corpus(cfg)
    elapsed = time.perf_counter() - started
    assert summary.scored_rows == 2 and summary.quarantined_rows == 0
    assert elapsed < 120, f"{elapsed:.0f} s"  # uncapped: about 22,000 windows, many minutes
    scores = _scores(tmp_path / "out")
    assert scores["truncated"].to_pylist() == [True, False]  # sorted by id: huge, normal
    window = MAXLEN - 2
    assert scores["n_tokens"][0].as_py() == window + 63 * (window - 16) + 2

    scorer = Scorer.from_config(cfg)
    started = time.perf_counter()
    enc = scorer.encode([huge])
    assert time.perf_counter() - started < 10
    assert len(enc.seqs) == 64 and enc.truncated.tolist() == [True]
    small_cap = Scorer.from_config(_cfg(tiny_model_dir, [path], tmp_path / "x", long_text="chunk", stride=16,
                                        max_windows=3))
    assert len(small_cap.encode([huge]).seqs) == 3


def test_max_windows_is_part_of_the_chunk_score_id():
    from allsides_batch.scoring import score_id

    chunk = [score_id("m", _cfg("m", ["i"], "o", long_text="chunk", stride=16, max_windows=n), MAXLEN)
             for n in (8, 64)]
    assert chunk[0] != chunk[1]
    truncate = [score_id("m", _cfg("m", ["i"], "o", max_windows=n), MAXLEN) for n in (8, 64)]
    assert truncate[0] == truncate[1]  # no windows in truncate mode: the setting does not apply


def test_max_windows_below_one_is_refused(tiny_model_dir, small, tmp_path):
    result = CliRunner().invoke(app, ["score", "--model", tiny_model_dir, "--input", str(small), "--output",
                                      str(tmp_path / "out"), "--device", "cpu", "--workers", "0",
                                      "--no-progress", "--long-text", "chunk", "--max-windows", "0"])
    assert result.exit_code == 2 and "--max-windows 0" in result.output, result.output


# ---- 4. dictionary-encoded and large strings are strings -------------------------------------------------
@pytest.mark.slow
def test_dictionary_and_large_string_text_columns_are_scored(tiny_model_dir, small, tmp_path):
    plain = pq.read_table(small, columns=["id", "source", "title", "text", "date"])
    variants = {
        "plain": plain,
        "dictionary": pa.table({k: plain[k].combine_chunks().dictionary_encode()
                                if k in ("text", "source", "id") else plain[k] for k in plain.column_names}),
        "large": plain.cast(pa.schema([(f.name, pa.large_string() if f.type == pa.string() else f.type)
                                       for f in plain.schema])),
    }
    probs = {}
    for name, table in variants.items():
        path = tmp_path / name / "part.parquet"
        path.parent.mkdir()
        pq.write_table(table, path)
        if name == "dictionary":
            assert pa.types.is_dictionary(pq.ParquetFile(path).schema_arrow.field("text").type)
        if name == "large":
            assert pq.ParquetFile(path).schema_arrow.field("text").type == pa.large_string()
        summary = score_corpus(_cfg(tiny_model_dir, [path], tmp_path / f"out-{name}"))
        assert (summary.scored_rows, summary.quarantined_rows) == (plain.num_rows, 0), name
        scores = _scores(tmp_path / f"out-{name}")
        assert scores["id"].to_pylist() == sorted(plain["id"].to_pylist())
        probs[name] = np.stack([scores[c].to_numpy() for c in ("p_left", "p_center", "p_right")], 1)
    np.testing.assert_allclose(probs["dictionary"], probs["plain"], atol=1e-6)
    np.testing.assert_allclose(probs["large"], probs["plain"], atol=1e-6)


def test_split_batch_reads_every_string_encoding():
    from allsides_batch.config import Columns
    from allsides_batch.scoring.parts import input_columns, split_batch

    texts = ["a vote", "the bill", None, " "]
    columns = {
        "dictionary": pa.array(texts).dictionary_encode(),
        "dictionary of large": pa.array(texts, pa.large_string()).dictionary_encode(),
        "large": pa.array(texts, pa.large_string()),
        "view": pa.array(texts, pa.string_view()),
    }
    for name, text in columns.items():
        batch = pa.record_batch({"id": pa.array(["1", "2", "3", "4"]).dictionary_encode(),
                                 "source": ["s"] * 4, "text": text})
        split = split_batch(batch, input_columns(Columns()), 0, set())
        assert split.keep["text"].to_pylist() == ["a vote", "the bill"], name
        assert split.keep["id"].to_pylist() == ["1", "2"], name
        assert split.quarantine["reason"].to_pylist() == ["null text", "empty text"], name
    ints = pa.record_batch({"id": ["1"], "source": ["s"], "text": pa.array([7]).dictionary_encode()})
    assert split_batch(ints, input_columns(Columns()), 0, set()).quarantine["reason"][0].as_py().startswith(
        "text not a string")


# ---- 5. device processes die with their parent ----------------------------------------------------------
def _alive(pids: list[int]) -> list[int]:
    import psutil

    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.slow
def test_killed_parent_takes_its_device_and_tokenizer_processes(tiny_model_dir, articles_sample, tmp_path):
    """`--devices cpu:2 --workers 1`: two device processes, each with a tokenizer process. Each device
    process pauses after its first file's parts (the stall seam) so the tree is alive when the parent is
    killed; afterwards nothing of it may remain."""
    import psutil

    table = pq.read_table(articles_sample).slice(0, 8)
    corpus = tmp_path / "corpus"
    for i in range(4):
        (corpus / f"day={i}").mkdir(parents=True)
        pq.write_table(table.slice(2 * i, 2), corpus / f"day={i}" / "part.parquet")
    marker = tmp_path / "stalled"
    env = {**os.environ, STALL_ENV: "part-committed:1", STALL_ENV + "_MARKER": str(marker)}
    cmd = [sys.executable, "-m", "allsides_batch", "score", "--model", tiny_model_dir, "--input", str(corpus),
           "--output", str(tmp_path / "out"), "--max-length", str(MAXLEN), "--device", "cpu", "--no-progress",
           "--devices", "cpu:2", "--workers", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tree: list[int] = []
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 300
        while True:  # both device processes running, each with its tokenizer process, one at least paused
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the device processes never started"
            devices = [c for c in parent.children() if "resource_tracker" not in " ".join(c.cmdline())]
            if marker.exists() and len(devices) == 2 and all(d.children() for d in devices):
                break
            time.sleep(0.2)
        tree = [p.pid for p in parent.children(recursive=True)]
        assert len(tree) >= 4
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while _alive(tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _alive(tree)
        assert not left, [" ".join(psutil.Process(p).cmdline())[:120] for p in left]
    finally:  # leave nothing behind, even when the test fails
        if proc.poll() is None:
            tree += [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
            proc.kill()
            proc.wait()
        for pid in _alive(tree):
            os.kill(pid, signal.SIGKILL)
