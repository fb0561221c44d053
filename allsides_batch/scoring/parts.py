"""Scorer I/O: input rows sorted into scored and quarantined, and streaming part writers committed by
rename (part schemas: schema.py; paths: layout.py; what is done: corpus.py)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import Columns
from ..schema import (
    ID,
    INPUT_COLUMNS,
    INPUT_FILE,
    QUARANTINE_INPUT,
    REASON,
    ROW_INDEX,
    SOURCE_URL,
    TEXT,
)
from ..storage.io import _commit, _fs

_STRING_TYPES = (pa.string(), pa.large_string(), pa.string_view())


def input_columns(columns: Columns) -> dict[str, str]:
    """Logical name → input column name; `source_url` has no mapping flag and is passed through as is."""
    mapping = dict(zip(INPUT_COLUMNS, (columns.id, columns.source, columns.text, columns.title, columns.date,
                                       columns.url, SOURCE_URL)))
    return {k: v for k, v in mapping.items() if v}


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


_NOT_UTF8 = "bytes that are not text; the writer of the file must encode its strings as UTF-8"


def _utf8_repaired(col: pa.Array) -> tuple[pa.Array, list[bool] | None]:
    """(the string column with each cell that is not valid UTF-8 decoded with U+FFFD for the bad bytes,
    which rows those were; None when every cell is valid). Parquet readers pass string bytes through
    unchecked, and Python cannot turn such a cell into a str."""
    try:
        col.validate(full=True)  # checks UTF-8, in C++: the common all-valid case costs one pass
        return col, None
    except pa.ArrowInvalid:
        pass
    values, bad = [], []
    for raw in col.cast(pa.binary()).to_pylist():
        try:
            values.append(None if raw is None else raw.decode("utf-8"))
            bad.append(False)
        except UnicodeDecodeError:
            values.append(raw.decode("utf-8", errors="replace"))
            bad.append(True)
    return pa.array(values, pa.string()), bad


def split_batch(batch: pa.RecordBatch, names: dict[str, str], start_row: int, seen_ids: set[str]) -> Split:
    """Sort one batch's rows into scorable and quarantined, with the reason for each quarantined row.

    Reasons: invalid UTF-8 in a column (its quarantine cell keeps the readable text), null id, duplicate
    id (within the file; the first occurrence is scored), text not a string, null text, empty text.
    `seen_ids` carries ids across the batches of one file."""
    present = {k: v for k, v in names.items() if v in batch.schema.names}
    n = batch.num_rows
    text_col = batch.column(present[TEXT])
    text_type = text_col.type.value_type if pa.types.is_dictionary(text_col.type) else text_col.type
    text_is_string = text_type in _STRING_TYPES  # string, large_string, string_view, or a dictionary of them
    strings = {k: _as_strings(batch.column(v)) for k, v in present.items()}
    invalid: list[str | None] = [None] * n  # the first column of each row that is not UTF-8
    for k, v in present.items():
        strings[k], bad = _utf8_repaired(strings[k])
        for i in np.flatnonzero(bad) if bad is not None else ():
            invalid[i] = invalid[i] or f"invalid UTF-8 in column {v!r} ({_NOT_UTF8})"
    ids = strings[ID].to_pylist()
    texts = strings[TEXT].to_pylist() if text_is_string else None
    reasons: list[str | None] = []
    for i in range(n):
        if invalid[i] is not None:
            reasons.append(invalid[i])
        elif ids[i] is None:
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
    full = {k: strings.get(k, pa.nulls(n, pa.string())) for k in INPUT_COLUMNS}
    keep = pa.table(full).filter(good)
    qcols = {k: strings.get(k, pa.nulls(n, pa.string())) for k in QUARANTINE_INPUT}
    qcols[REASON] = pa.array(reasons, pa.string())
    qcols[INPUT_FILE] = pa.nulls(n, pa.string())
    qcols[ROW_INDEX] = pa.array(range(start_row, start_row + n), pa.int64())
    quarantine = pa.table(qcols).filter(bad)
    rows = [start_row + i for i in range(n) if reasons[i] is None]
    return Split(keep=keep, quarantine=quarantine, row_index=rows)


def _reason_rows(reason: str, row_index: pa.Array) -> pa.Table:
    """Quarantine rows with nothing of the input but a reason and a row index (null: unknown)."""
    n = len(row_index)
    cols = {k: pa.nulls(n, pa.string()) for k in QUARANTINE_INPUT}
    cols.update({REASON: pa.array([reason] * n, pa.string()), INPUT_FILE: pa.nulls(n, pa.string()),
                 ROW_INDEX: row_index})
    return pa.table(cols)


def unreadable_row(reason: str) -> pa.Table:
    """A single quarantine row standing for a whole file that could not be read."""
    return _reason_rows(reason, pa.nulls(1, pa.int64()))


def damaged_rows(first_row: int, n: int, reason: str) -> pa.Table:
    """Quarantine rows standing one for one for rows that could not be read (their index is known)."""
    return _reason_rows(reason, pa.array(range(first_row, first_row + n), pa.int64()))


def model_refused_rows(keep: pa.Table, row_index: list[int], reason: str) -> pa.Table:
    """Quarantine rows for rows that were read and sent to the model (`keep` rows of a Split) but whose
    output cannot be published."""
    n = keep.num_rows
    cols = {k: keep[k] for k in QUARANTINE_INPUT}
    cols.update({REASON: pa.array([reason] * n, pa.string()), INPUT_FILE: pa.nulls(n, pa.string()),
                 ROW_INDEX: pa.array(row_index, pa.int64())})
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
