"""Scorer I/O: file keys, row triage, parts committed by rename, manifest listing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from allsides_batch.config import Columns
from allsides_batch.errors import UserError
from allsides_batch.schema import QUARANTINE_SCHEMA, SCORES_SCHEMA
from allsides_batch.scoring.parts import PartWriter, input_columns, split_batch
from allsides_batch.storage.corpus import content_key, file_key, read_manifest
from allsides_batch.storage.layout import Layout


def test_file_key_names_the_content_not_the_path_or_mtime(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"x": [1]}), path)
    key, fingerprint = file_key(str(path))
    assert fingerprint == {"size": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert file_key(os.path.relpath(path))[0] == key
    os.utime(path, (5, 5))                       # touched: same bytes, same key
    assert file_key(str(path))[0] == key
    link = tmp_path / "link.parquet"
    link.symlink_to(path)                        # another name for the same bytes
    copy = tmp_path / "copy.parquet"
    shutil.copy2(path, copy)                     # a copy elsewhere: same bytes, same key
    assert file_key(str(link))[0] == key and file_key(str(copy))[0] == key
    pq.write_table(pa.table({"x": [7]}), path)   # same size, another value ...
    os.utime(path, (5, 5))                       # ... and the old mtime, as `cp -p` leaves it
    assert path.stat().st_size == copy.stat().st_size
    assert file_key(str(path))[0] != key
    with pytest.raises(UserError, match="not found"):
        file_key(str(tmp_path / "gone.parquet"))
    assert content_key(str(tmp_path / "gone.parquet")) is None


def test_content_key_cache_hashes_once_per_stat_signature(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"x": list(range(100))}), path)
    out = tmp_path / "out"
    key, _ = content_key(str(path), str(out))
    (cache,) = (out / "_fingerprints").iterdir()
    entry = json.loads(cache.read_text())
    assert entry["path"] == str(path.resolve()) and entry["key"] == key
    entry["key"] = "planted"                     # a cache hit is served without reading the file ...
    cache.write_text(json.dumps(entry))
    assert content_key(str(path), str(out))[0] == "planted"
    os.utime(path, (9, 9))                       # ... and any stat change rehashes it
    assert content_key(str(path), str(out))[0] == key


def test_split_batch_reasons_and_mapped_columns():
    names = input_columns(Columns(id="doc", text="body", title=""))
    batch = pa.record_batch({"doc": [1, None, 2, 1, 3], "source": ["s"] * 5,
                             "body": ["ok", "x", "   ", "again", None]})
    seen: set[str] = set()
    split = split_batch(batch, names, start_row=10, seen_ids=seen)
    assert split.keep["id"].to_pylist() == ["1"] and split.row_index == [10]
    assert split.keep["title"].null_count == 1  # no title column mapped: null, not an error
    assert split.quarantine["reason"].to_pylist() == ["null id", "empty text", "duplicate id", "null text"]
    assert split.quarantine["row_index"].to_pylist() == [11, 12, 13, 14]
    later = split_batch(pa.record_batch({"doc": [2], "source": ["s"], "body": ["fine"]}), names, 15, seen)
    assert later.keep["id"].to_pylist() == ["2"]  # the earlier "2" had empty text, so it was never scored


def test_part_writer_commits_by_rename_or_leaves_nothing(tmp_path):
    layout = Layout(str(tmp_path), "abc")
    writer = PartWriter(layout.score_part("k1"), SCORES_SCHEMA)
    assert not os.path.exists(layout.score_part("k1"))
    assert os.path.basename(writer.tmp).startswith(".") and writer.tmp.endswith(".tmp")
    writer.commit()
    assert pq.read_table(layout.score_part("k1")).schema.equals(SCORES_SCHEMA)
    aborted = PartWriter(layout.quarantine_part("k2"), QUARANTINE_SCHEMA)
    aborted.abort()
    assert os.listdir(os.path.dirname(layout.quarantine_part("k2"))) == []


def test_read_manifest_lists_every_model(tmp_path):
    from allsides_batch.storage.io import write_json

    assert read_manifest(str(tmp_path)) == []
    for model, key in [("m2", "k1"), ("m1", "k2"), ("m1", "k1")]:
        write_json(Layout(str(tmp_path), model).manifest_entry(key),
                   {"model_id": model, "input": key, "key": key, "rows_in": 1, "rows_scored": 1})
    damaged = Layout(str(tmp_path), "m1").manifest_entry("k3")
    with open(damaged, "w") as fh:
        fh.write('{"model_id": "m1", "inp')
    found: list[str] = []
    assert [(e["model_id"], e["input"]) for e in read_manifest(str(tmp_path), found)] == [
        ("m1", "k1"), ("m1", "k2"), ("m2", "k1")]
    assert found == [damaged]
    os.remove(damaged)
    assert Layout(str(tmp_path), "m1").done_keys() == {"k1", "k2"}


@pytest.mark.parametrize("bad", [pa.int64(), pa.binary()])
def test_non_string_text_is_quarantined_whole(bad):
    values = [b"a", b"b"] if bad == pa.binary() else [1, 2]
    batch = pa.record_batch({"id": ["a", "b"], "source": ["s", "s"], "text": pa.array(values, bad)})
    split = split_batch(batch, input_columns(Columns()), 0, set())
    reasons = split.quarantine["reason"].to_pylist()
    assert split.keep.num_rows == 0 and all(r.startswith("text not a string") for r in reasons)
