"""A scoring run reads its model once: plan describes the model and the engine reuses the description
(read_model_kind once), and each model file is hashed once per run, and not again by a later plan in the
same process (the nightly flow plans, scores and reconciles in one process)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from allsides_batch.config import ScoreConfig
from allsides_batch.models import identity
from allsides_batch.models.files import CONFIG_FILE, TOKENIZER_FILES, TRANSFORMER_WEIGHTS_FILE
from allsides_batch.scoring import plan, score_corpus
from allsides_batch.scoring.engine import Scorer, prepare_rows
from allsides_batch.storage import io

pytestmark = pytest.mark.slow  # two scoring runs of a real (tiny) transformer: seconds


def _count_calls(monkeypatch, real, record) -> None:
    """Wrap `real` in every loaded allsides_batch module that holds it, so that each call, wherever it is
    made, runs `record(*args)` and then the real function."""
    def spy(*args, **kwargs):
        record(*args)
        return real(*args, **kwargs)

    for name, module in list(sys.modules.items()):
        if name.startswith("allsides_batch") and getattr(module, real.__name__, None) is real:
            monkeypatch.setattr(module, real.__name__, spy)


def _settle() -> None:
    """Wait until files written just now are old enough for the in-process memo (storage.io.RECENT_NS)."""
    time.sleep(io.RECENT_NS / 1e9 + 0.05)


@pytest.fixture
def counted(monkeypatch):
    """(hashes: real path -> times its bytes were hashed, kinds: model dir -> read_model_kind calls)."""
    hashes, kinds = Counter(), Counter()
    _count_calls(monkeypatch, io.hash_file, lambda url, *_: hashes.update([os.path.realpath(url)]))
    _count_calls(monkeypatch, identity.read_model_kind, lambda model_dir: kinds.update([os.path.realpath(model_dir)]))
    return hashes, kinds


def test_a_scoring_run_hashes_each_model_file_once(tiny_model_dir, articles_sample, tmp_path, counted):
    hashes, kinds = counted
    model = tmp_path / "model"  # a copy: paths no earlier test in this process has hashed
    shutil.copytree(tiny_model_dir, model)
    rows = pq.read_table(articles_sample).slice(0, 40)
    corpus = tmp_path / "corpus.parquet"
    pq.write_table(rows, corpus)
    _settle()
    cfg = ScoreConfig(model=str(model), input=[str(corpus)], output=str(tmp_path / "out"), max_length=64,
                      device="cpu", workers=0, progress=False)

    summary = score_corpus(cfg)

    assert summary.scored_rows == 40
    model_files = {str(p.resolve()) for p in model.rglob("*") if p.is_file()}
    assert {os.path.basename(p) for p in model_files} >= {CONFIG_FILE, TRANSFORMER_WEIGHTS_FILE}
    # every file of the model directory (all of them decide its model_id) and the input: once each
    assert dict(hashes) == {**{p: 1 for p in model_files}, str(corpus.resolve()): 1}
    assert dict(kinds) == {str(model.resolve()): 1}

    # the nightly flow plans again (reconcile) in the same process: nothing is read again, same id
    hashes.clear()
    kinds.clear()
    assert plan(cfg).score_id == summary.model_id
    assert dict(hashes) == {}

    # the description plan handed to the engine scores as a Scorer that describes the model itself
    scores = pq.read_table(summary.parts[0]).sort_by("id")
    table = rows.sort_by("id")
    texts = prepare_rows(Scorer.from_config(cfg).spec.prep, table["title"].to_pylist(), table["text"].to_pylist(),
                         table["source"].to_pylist())
    alone = Scorer.from_config(cfg).predict(texts)
    got = np.stack([scores[c].to_numpy() for c in ("p_left", "p_center", "p_right")], 1)
    np.testing.assert_allclose(got, alone, atol=1e-6)


def test_the_hash_memo_sees_a_rewrite_that_keeps_size_and_mtime(tmp_path, counted):
    """A file rewritten in place with its old size and mtime (as `cp -p` leaves it) is hashed again: the
    memo's key holds the ctime and inode too, which no rewrite keeps."""
    hashes, _ = counted
    path = tmp_path / "data.bin"
    path.write_bytes(b"a" * 1000)
    os.utime(path, ns=(5, 5))
    _settle()
    first = io.file_sha256(str(path))
    assert io.file_sha256(str(path)) == first == hashlib.sha256(b"a" * 1000).hexdigest()
    assert hashes[str(path.resolve())] == 1  # the second answer came from the memo

    with open(path, "r+b") as fh:  # same inode, same size
        fh.write(b"b" * 1000)
    os.utime(path, ns=(5, 5))
    assert io.file_sha256(str(path)) == hashlib.sha256(b"b" * 1000).hexdigest()
    assert hashes[str(path.resolve())] == 2


def test_model_id_is_the_hash_it_always_was(tiny_model_dir):
    """model_id streams each file's name and bytes into one sha256, as before the memo: ids of models
    already scored and published stay the same."""
    digest = hashlib.sha256()
    for name in (TRANSFORMER_WEIGHTS_FILE, CONFIG_FILE, *TOKENIZER_FILES):
        path = Path(tiny_model_dir) / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    assert identity.model_id(tiny_model_dir) == digest.hexdigest()[:16]
