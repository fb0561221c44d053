"""Scorer I/O: input validation into scored and quarantined rows, the output layout, streaming part
writers committed by rename, and the per-file manifest that makes scoring exactly-once.

Layout under the output directory (hive-style, safe for several writers at once):
  scores/model_id=<id>/part-<key>.parquet       one part per input file (zstd)
  quarantine/model_id=<id>/part-<key>.parquet   rows that could not be scored, with a reason
  _manifest/model_id=<id>/<key>.json            written after the parts: the file is done iff it exists
  runs/<run_id>.json                            one summary per run
  _fingerprints/<hash of path>.json             cache: path + stat signature -> content key
<key> names the input file's content (sha256 of its bytes, or the object store's ETag): a changed file
is new work, the same bytes under another path or touched are not. Entries whose input left the corpus
(deleted, or rewritten with other content) are retired by `reconcile` (see docs/scoring.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .config import Columns
from .errors import UserError
from .io import _commit, _fs, join, read_json, write_json

SCORES_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("date", pa.string()), ("label", pa.string()),
    ("p_left", pa.float32()), ("p_center", pa.float32()), ("p_right", pa.float32()),
    ("bias_score", pa.float32()), ("confidence", pa.float32()), ("n_tokens", pa.int32()),
    ("truncated", pa.bool_()), ("model_id", pa.string()), ("run_id", pa.string()),
    ("scored_at", pa.timestamp("us", tz="UTC")), ("url", pa.string()), ("source_url", pa.string()),
])
# Input columns copied (as strings) into quarantine rows, in this order, when the input has them.
QUARANTINE_INPUT = ("id", "source", "title", "text", "date", "url", "source_url")
QUARANTINE_TAIL = [("reason", pa.string()), ("input_file", pa.string()), ("row_index", pa.int64()),
                   ("model_id", pa.string()), ("run_id", pa.string()), ("scored_at", pa.timestamp("us", tz="UTC"))]
_STRING_TYPES = (pa.string(), pa.large_string(), pa.string_view())


def input_columns(columns: Columns) -> dict[str, str]:
    """Logical name → input column name; `source_url` has no mapping flag and is passed through as is."""
    mapping = {"id": columns.id, "source": columns.source, "text": columns.text, "title": columns.title,
               "date": columns.date, "url": columns.url, "source_url": "source_url"}
    return {k: v for k, v in mapping.items() if v}


REQUIRED = ("id", "source", "text")
LOGICAL = ("id", "source", "text", "title", "date", "url", "source_url")


FINGERPRINTS = "_fingerprints"   # per-path cache of content keys under the output directory


def _where(url: str) -> str:
    """A file's canonical name: URLs as given, local paths absolute with symlinks resolved."""
    return url if "://" in url else os.path.realpath(url)


def _signature(fs, path: str, url: str) -> tuple[dict, dict | None] | None:
    """(stat signature, content fingerprint the store already knows or None); None if the file is gone.

    Local files: size, mtime_ns, ctime_ns, inode and device. ctime cannot be set by a user, so a
    rewrite that keeps size and mtime (`cp -p`) still changes the signature. Object stores: size and
    the ETag / MD5 the store computes from the content, which is then the fingerprint itself."""
    if "://" not in url:
        try:
            st = os.stat(url)
        except FileNotFoundError:
            return None
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino,
                "dev": st.st_dev}, None
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    stamp = next((info[k] for k in ("mtime", "LastModified", "last_modified", "updated") if info.get(k) is not None),
                 None)
    sig = {"size": info.get("size"), "stamp": str(stamp)}
    content = next((str(info[k]).strip('"') for k in ("ETag", "etag", "md5Hash") if info.get(k)), None)
    return sig, ({"size": info.get("size"), "etag": content} if content else None)


def _sha256(fs, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_key(url: str, cache_root: str | None = None, pending: list | None = None) -> tuple[str, dict] | None:
    """(key, fingerprint) naming the *content* of an input file, or None if it does not exist.

    The fingerprint is the sha256 of the bytes (local files, and stores without a content hash) or the
    store's ETag/MD5; the key is a short hash of it, so the same bytes reached by another path, a
    symlink or after `touch` get the same key, and any change of content gets a new one. Hashing reads
    the file once; with `cache_root` (the output directory) the result is cached under
    `<cache_root>/_fingerprints/` by path and stat signature, so later runs only stat the file. With
    `pending` (a list), new cache entries are appended to it for `write_cache` instead of written now."""
    fs, path = _fs(url)
    found = _signature(fs, path, url)
    if found is None:
        return None
    sig, known = found
    where = _where(url)
    cache = None
    if cache_root:
        cache = join(cache_root, FINGERPRINTS, hashlib.sha256(where.encode()).hexdigest()[:24] + ".json")
        cached = _read_cache(cache)
        if cached and cached.get("path") == where and cached.get("signature") == sig:
            return cached["key"], cached["fingerprint"]
    fingerprint = known or {"size": sig["size"], "sha256": _sha256(fs, path)}
    key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:20]
    if cache:
        entry = (cache, {"path": where, "signature": sig, "fingerprint": fingerprint, "key": key})
        if pending is not None:
            pending.append(entry)
        else:
            write_cache([entry])
    return key, fingerprint


def write_cache(entries: list) -> None:
    for url, entry in entries:
        try:
            write_json(url, entry)
        except OSError:
            pass  # a read-only output fails later with a clear error; a lost cache entry only costs a rehash


def _read_cache(url: str) -> dict | None:
    try:
        return read_json(url)
    except (FileNotFoundError, ValueError, OSError):
        return None


def file_key(url: str, cache_root: str | None = None, pending: list | None = None) -> tuple[str, dict]:
    """content_key of a file that must exist (a UserError if it does not)."""
    found = content_key(url, cache_root, pending)
    if found is None:
        raise UserError(f"input not found: {url!r}")
    return found


@dataclass(frozen=True)
class Layout:
    """Paths of one model's outputs under one output directory."""

    output: str
    score_id: str

    def score_part(self, key: str) -> str:
        return join(self.output, "scores", f"model_id={self.score_id}", f"part-{key}.parquet")

    def quarantine_part(self, key: str) -> str:
        return join(self.output, "quarantine", f"model_id={self.score_id}", f"part-{key}.parquet")

    def manifest_dir(self) -> str:
        return join(self.output, "_manifest", f"model_id={self.score_id}")

    def manifest_entry(self, key: str) -> str:
        return join(self.manifest_dir(), f"{key}.json")

    def run_summary(self, run_id: str) -> str:
        return join(self.output, "runs", f"{run_id}.json")

    def done_keys(self) -> set[str]:
        fs, path = _fs(self.manifest_dir())
        if not fs.exists(path):
            return set()
        return {os.path.basename(p)[:-5] for p in fs.ls(path, detail=False) if p.endswith(".json")}


def read_manifest(output: str) -> list[dict]:
    """Every committed manifest entry under `output` (all models), sorted by model id and input URL."""
    fs, path = _fs(join(output, "_manifest"))
    if not fs.exists(path):
        return []
    entries = []
    for p in sorted(fs.glob(path.rstrip("/") + "/model_id=*/*.json")):
        with fs.open(p, "r") as fh:
            entries.append(json.load(fh))
    return sorted(entries, key=lambda e: (e["model_id"], e["input"]))


def entry_inputs(entry: dict) -> list[str]:
    """The input paths a manifest entry stands for (entries of older versions name one `input`)."""
    return list(entry.get("inputs") or [entry["input"]])


def live_inputs(entry: dict, cache_root: str | None, extra: list[str] = ()) -> list[str]:
    """The paths among the entry's inputs (and `extra`) that still hold the content it scored."""
    return sorted(p for p in dict.fromkeys([*entry_inputs(entry), *extra])
                  if (found := content_key(p, cache_root)) is not None and found[0] == entry["key"])


@dataclass
class Reconciled:
    """What `reconcile` changed: entries whose input left the corpus, and leftovers of killed runs."""

    retired_files: int = 0
    retired_rows: int = 0
    retired_inputs: list[str] = field(default_factory=list)
    relinked_files: int = 0
    orphan_parts_removed: int = 0

    def to_dict(self) -> dict:
        return {"retired_files": self.retired_files, "retired_rows": self.retired_rows,
                "retired_inputs": self.retired_inputs[:20], "relinked_files": self.relinked_files,
                "orphan_parts_removed": self.orphan_parts_removed}


def reconcile(output: str, corpus: dict[str, list[str]] | None = None, prune_orphans: bool = False) -> Reconciled:
    """Make the output match the corpus as it is now, for every model scored into it.

    An entry whose inputs no longer hold its content (deleted, or rewritten with other bytes) is retired:
    its manifest entry goes first (from then on no reader counts it), then its parts. `corpus` (content
    key -> paths seen this run) adds paths that now hold an entry's content, so a file moved or reached
    through a new name keeps its scores. With `prune_orphans` (only when no other writer is at work on
    this output: the end of a whole-corpus run), parts without a manifest entry whose content is not in
    `corpus`, and temporary files of killed runs older than an hour, are removed too."""
    import time

    out = Reconciled()
    corpus = corpus or {}
    fs, _ = _fs(output)
    for entry in read_manifest(output):
        layout = Layout(output, entry["model_id"])
        live = live_inputs(entry, output, corpus.get(entry["key"], []))
        if not live:
            _rm(fs, layout.manifest_entry(entry["key"]))
            for part in (layout.score_part(entry["key"]), layout.quarantine_part(entry["key"])):
                _rm(fs, part)
            out.retired_files += 1
            out.retired_rows += int(entry.get("rows_in", 0))
            out.retired_inputs.extend(entry_inputs(entry))
        elif live != entry_inputs(entry):
            write_json(layout.manifest_entry(entry["key"]), {**entry, "input": live[0], "inputs": live})
            out.relinked_files += 1
    if prune_orphans:
        done = {(e["model_id"], e["key"]) for e in read_manifest(output)}
        now = time.time()
        for table in ("scores", "quarantine"):
            _, root = _fs(join(output, table))
            for path in fs.glob(root.rstrip("/") + "/model_id=*/*"):
                name, model = os.path.basename(path), os.path.basename(os.path.dirname(path))[len("model_id="):]
                if name.startswith("part-") and name.endswith(".parquet"):
                    key = name[len("part-"):-len(".parquet")]
                    if (model, key) not in done and key not in corpus:
                        _rm(fs, path)
                        out.orphan_parts_removed += 1
                elif name.startswith(".") and name.endswith(".tmp"):
                    modified = fs.info(path).get("mtime") or now
                    if now - float(modified) > 3600:
                        _rm(fs, path)
    return out


def _rm(fs, url: str) -> None:
    _, path = _fs(url)
    try:
        fs.rm(path)
    except FileNotFoundError:
        pass


class PartWriter:
    """Streams record batches into a hidden temporary file beside `url`; commit() renames it into place.

    The temporary name starts with '.' and ends in '.tmp', so dataset readers never see a half part."""

    def __init__(self, url: str, schema: pa.Schema):
        self.url, self.schema, self.rows = url, schema, 0
        self.fs, self.path = _fs(url)
        self.fs.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.tmp = os.path.join(os.path.dirname(self.path), f".{os.path.basename(self.path)}.{uuid.uuid4().hex}.tmp")
        self._fh = self.fs.open(self.tmp, "wb")
        self._writer = pq.ParquetWriter(self._fh, schema, compression="zstd")

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table.cast(self.schema))
            self.rows += table.num_rows

    def commit(self) -> str:
        try:
            self._writer.close()
            self._fh.close()
            _commit(self.fs, self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.url

    def abort(self) -> None:
        """Drop the temporary file; never raises (a full disk fails the close, not the cleanup)."""
        for close in (self._writer.close, self._fh.close):
            try:
                close()
            except Exception:  # noqa: BLE001 - the file is being thrown away; the first error is what counts
                pass
        try:
            if self.fs.exists(self.tmp):
                self.fs.rm(self.tmp)
        except OSError:
            pass


@dataclass
class Split:
    """One record batch divided into rows to score and rows to quarantine."""

    keep: pa.Table                      # logical column names, strings; rows to score
    quarantine: pa.Table                # quarantine schema minus the run columns
    row_index: list[int] = field(default_factory=list)


def _as_strings(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):  # e.g. dictionary<values=string>: the values, not the indices
        col = col.dictionary_decode()
    if col.type in _STRING_TYPES:
        return col.cast(pa.string())
    try:
        return col.cast(pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # nested types: keep their text form
        return pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())


def split_batch(batch: pa.RecordBatch, names: dict[str, str], start_row: int, seen_ids: set[str]) -> Split:
    """Sort one batch's rows into scorable and quarantined, with the reason for each quarantined row.

    Reasons: null id, duplicate id (within the file; the first occurrence is scored), text not a string,
    null text, empty text. `seen_ids` carries ids across the batches of one file."""
    present = {k: v for k, v in names.items() if v in batch.schema.names}
    n = batch.num_rows
    text_col = batch.column(present["text"])
    text_type = text_col.type.value_type if pa.types.is_dictionary(text_col.type) else text_col.type
    text_is_string = text_type in _STRING_TYPES  # string, large_string, string_view, or a dictionary of them
    strings = {k: _as_strings(batch.column(v)) for k, v in present.items()}
    ids = strings["id"].to_pylist()
    texts = strings["text"].to_pylist() if text_is_string else None
    reasons: list[str | None] = []
    for i in range(n):
        if ids[i] is None:
            reasons.append("null id")
        elif not text_is_string:
            reasons.append(f"text not a string ({text_col.type})")
        elif texts[i] is None:
            reasons.append("null text")
        elif not texts[i].strip():
            reasons.append("empty text")
        elif ids[i] in seen_ids:
            reasons.append("duplicate id")
        else:
            reasons.append(None)
            seen_ids.add(ids[i])
    bad = pa.array([r is not None for r in reasons], pa.bool_())
    good = pc.invert(bad)
    # Every logical column, null where unmapped or absent: downstream code never checks which exist.
    full = {k: strings.get(k, pa.nulls(n, pa.string())) for k in LOGICAL}
    keep = pa.table(full).filter(good)
    qcols = {k: strings.get(k, pa.nulls(n, pa.string())) for k in QUARANTINE_INPUT}
    qcols["reason"] = pa.array(reasons, pa.string())
    qcols["input_file"] = pa.nulls(n, pa.string())
    qcols["row_index"] = pa.array(range(start_row, start_row + n), pa.int64())
    quarantine = pa.table(qcols).filter(bad)
    rows = [start_row + i for i in range(n) if reasons[i] is None]
    return Split(keep=keep, quarantine=quarantine, row_index=rows)


# Every quarantine part has every column (null where the input lacks it), so parts read as one dataset.
QUARANTINE_SCHEMA = pa.schema([(k, pa.string()) for k in QUARANTINE_INPUT] + QUARANTINE_TAIL)


def unreadable_row(reason: str) -> pa.Table:
    """A single quarantine row standing for a whole file that could not be read."""
    cols = {k: pa.nulls(1, pa.string()) for k in QUARANTINE_INPUT}
    cols.update(reason=pa.array([reason]), input_file=pa.nulls(1, pa.string()), row_index=pa.nulls(1, pa.int64()))
    return pa.table(cols)


def damaged_rows(first_row: int, n: int, reason: str) -> pa.Table:
    """Quarantine rows standing one for one for rows that could not be read (their index is known)."""
    cols = {k: pa.nulls(n, pa.string()) for k in QUARANTINE_INPUT}
    cols.update(reason=pa.array([reason] * n, pa.string()), input_file=pa.nulls(n, pa.string()),
                row_index=pa.array(range(first_row, first_row + n), pa.int64()))
    return pa.table(cols)


def with_run_columns(table: pa.Table, schema: pa.Schema, **constants) -> pa.Table:
    """Fill constant columns (model_id, run_id, scored_at, input_file) and cast to the part schema."""
    n = table.num_rows
    for name, value in constants.items():
        typ = schema.field(name).type
        col = pa.array([value] * n, typ)
        if name in table.schema.names:
            table = table.set_column(table.schema.get_field_index(name), name, col)
        else:
            table = table.append_column(name, col)
    return table.select(schema.names).cast(schema)
