"""Labelled data: reading, column mapping, label normalisation and outlet-grouped splits.

Only pyarrow and numpy here: train must run on GPU workers without polars or prefect.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .. import LABELS
from ..config import Columns
from ..errors import UserError
from ..outlets import outlet_groups
from ..storage.io import expand_inputs, file_fingerprint, read_table, schema_names
from ..text.prep import TextPrep, prepare_text

log = logging.getLogger(__name__)

_LABEL_INDEX = {name: i for i, name in enumerate(LABELS)}
_LABEL_INDEX.update({str(i): i for i in range(len(LABELS))})
_VALID_NAMES = {"valid", "validation", "val", "dev"}


@dataclass
class LabelledData:
    """Articles ready for training: prepared text, label index, outlet, id (aligned lists)."""

    texts: list[str]
    labels: np.ndarray  # (N,) int64 in {0, 1, 2}
    sources: list[str]
    ids: list[str]
    split_values: list[str | None] | None = None
    urls: list[str | None] | None = None  # article URLs, where the data has them (--group-by domain)
    files: list[dict] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def groups(self, group_by: str = "source") -> list[str]:
        """The outlet key of each article for grouped splits and folds (outlets.outlet_groups)."""
        return outlet_groups(self.sources, self.urls, group_by)

    def subset(self, index: Sequence[int] | np.ndarray) -> LabelledData:
        index = list(map(int, index))
        return LabelledData(
            texts=[self.texts[i] for i in index],
            labels=self.labels[index],
            sources=[self.sources[i] for i in index],
            ids=[self.ids[i] for i in index],
            split_values=None if self.split_values is None else [self.split_values[i] for i in index],
            urls=None if self.urls is None else [self.urls[i] for i in index],
            files=self.files,
            dropped=self.dropped,
        )


def normalise_labels(values: Sequence) -> np.ndarray:
    """left/center/right in any case (also 'centre'), or 0/1/2 → int64 indices. Unknown values raise."""
    out = np.empty(len(values), dtype=np.int64)
    bad: Counter = Counter()
    for i, value in enumerate(values):
        key = str(value).strip().lower() if value is not None else None
        if key == "centre":
            key = "center"
        idx = _LABEL_INDEX.get(key) if key is not None else None
        if idx is None:
            bad[value] += 1
            out[i] = -1
        else:
            out[i] = idx
    if bad:
        shown = ", ".join(f"{v!r} ({n}x)" for v, n in bad.most_common(5))
        raise UserError(f"unknown label values: {shown}; labels must be left/center/right (any case) or 0/1/2")
    return out


def _resolve_label_column(columns: Columns, found: list[str]) -> str:
    if columns.label != "auto":
        return columns.label
    for candidate in ("bias_text", "bias", "label"):
        if candidate in found:
            return candidate
    raise UserError(f"no label column: looked for bias_text, bias, label; columns found: {', '.join(found)}; "
                    "name it with --label-column")


def _check_columns(needed: list[str], found: list[str], where: str) -> None:
    missing = [c for c in needed if c not in found]
    if missing:
        raise UserError(f"{where}: missing column(s) {', '.join(missing)}; columns found: {', '.join(found)} "
                        "(map yours with --text-column, --title-column, --label-column, --source-column)")


def _read_hf(name: str) -> pa.Table:
    try:
        import datasets
    except ImportError as exc:
        raise UserError("hf: inputs need the 'datasets' package: pip install -e '.[hf]'") from exc
    repo, _, split = name.partition(":")
    try:
        ds = datasets.load_dataset(repo, split=split or "train")
    except Exception as exc:  # hub, network and format errors all surface here; say which dataset
        raise UserError(f"could not load Hugging Face dataset {repo!r} ({type(exc).__name__}: {exc}); "
                        "offline, export it to Parquet and pass the file") from exc
    return ds.data.table if hasattr(ds.data, "table") else ds.with_format("arrow")[:]


def load_labelled(paths: Sequence[str], columns: Columns = Columns(), split_column: str | None = None,
                  prep: TextPrep = TextPrep(), fingerprint: bool = True) -> LabelledData:
    """Read labelled articles from Parquet files / directories / globs / fsspec URLs or `hf:NAME[:split]`."""
    tables: list[pa.Table] = []
    files: list[dict] = []
    for path in paths:
        if str(path).startswith("hf:"):
            tables.append(_read_hf(str(path)[3:]))
            files.append({"path": str(path)})
            continue
        for url in expand_inputs([path]):
            found = schema_names(url)
            label_col = _resolve_label_column(columns, found)
            wanted = [columns.text, label_col, columns.source]
            optional = [c for c in (columns.title, columns.id, columns.url) if c and c in found]
            if split_column:
                wanted.append(split_column)
            _check_columns(wanted, found, url)
            table = read_table(url, list(dict.fromkeys(wanted + optional)))
            tables.append(table.rename_columns(["__label__" if c == label_col else c for c in table.column_names]))
            files.append(file_fingerprint(url) if fingerprint else {"path": url})
    return _from_tables(tables, files, columns, split_column, prep)


def _from_tables(tables: list[pa.Table], files: list[dict], columns: Columns, split_column: str | None,
                 prep: TextPrep) -> LabelledData:
    texts: list[str] = []
    labels: list = []
    sources: list[str] = []
    ids: list[str] = []
    urls: list[str | None] = []
    splits: list[str | None] = []
    dropped: Counter = Counter()
    for table in tables:
        names = table.column_names
        if "__label__" not in names:  # hf: tables are not renamed on read
            label_col = _resolve_label_column(columns, names)
            _check_columns([columns.text, label_col, columns.source], names, "dataset")
            table = table.rename_columns(["__label__" if c == label_col else c for c in names])
        rows = table.to_pydict()
        n = table.num_rows
        title = rows.get(columns.title) if columns.title else None
        row_ids = rows.get(columns.id)
        row_urls = rows.get(columns.url) if columns.url else None
        for i in range(n):
            text = rows[columns.text][i]
            if not isinstance(text, str) or not text.strip():
                dropped["empty or null text"] += 1
                continue
            source = rows[columns.source][i]
            prepared = prepare_text(title[i] if title else None, text, prep,
                                    source=str(source) if source is not None else None)
            texts.append(prepared)
            labels.append(rows["__label__"][i])
            sources.append(str(rows[columns.source][i]) if rows[columns.source][i] is not None else "")
            ids.append(str(row_ids[i]) if row_ids is not None else f"row{len(ids)}")
            urls.append(str(row_urls[i]) if row_urls is not None and row_urls[i] is not None else None)
            if split_column:
                splits.append(rows[split_column][i])
    if dropped:
        for reason, count in dropped.items():
            log.warning(f"skipped {count} row(s) with {reason}")
    if not texts:
        raise UserError("no usable rows: every row had an empty or null text; check --text-column")
    return LabelledData(texts=texts, labels=normalise_labels(labels), sources=sources, ids=ids,
                        split_values=splits if split_column else None,
                        urls=urls if any(u is not None for u in urls) else None, files=files, dropped=dict(dropped))


# ----------------------------------------------------------------------------------------------- splits

def check_fold_count(k: int) -> None:
    """Folds need at least two: one held out, one to train on."""
    if k < 2:
        raise UserError(f"need at least 2 folds, got {k}")


def outlet_folds(sources: Sequence[str], labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Assign every row a fold in [0, k): all rows of an outlet share a fold (grouped), and each fold
    gets about 1/k of each label (stratified).

    Greedy, largest outlets first (ties in a seeded random order): each outlet goes to the fold where
    adding its label counts moves the fold's per-label totals least away from the per-fold target
    (the sum of squared deviations), which balances fold sizes and label mixes together. The same
    seed gives the same folds.
    """
    check_fold_count(k)
    rng = np.random.default_rng(seed)
    outlets, inverse = np.unique(np.asarray(sources, dtype=object).astype(str), return_inverse=True)
    if len(outlets) < k:
        raise UserError(f"only {len(outlets)} outlet(s): cannot make {k} outlet-disjoint folds")
    counts = np.zeros((len(outlets), len(LABELS)), dtype=np.float64)  # (outlets, labels)
    np.add.at(counts, (inverse, np.asarray(labels, dtype=np.int64)), 1.0)
    target = counts.sum(axis=0) / k                                      # (labels,)
    load = np.zeros((k, len(LABELS)), dtype=np.float64)                 # (folds, labels)
    fold_of = np.empty(len(outlets), dtype=np.int64)
    shuffled = rng.permutation(len(outlets))
    for o in shuffled[np.argsort(-counts[shuffled].sum(axis=1), kind="stable")]:
        cost = ((load + counts[o] - target) ** 2).sum(axis=1) - ((load - target) ** 2).sum(axis=1)
        best = np.flatnonzero(np.isclose(cost, cost.min()))
        fold = int(rng.choice(best))
        fold_of[o] = fold
        load[fold] += counts[o]
    return fold_of[inverse]


def split_outlet(sources: Sequence[str], labels: np.ndarray, val_fraction: float, seed: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Outlet-grouped, label-stratified train/validation indices: no validation outlet is in training.

    Outlets are visited in a seeded random order and moved to validation while no label goes past
    its share (val_fraction of that label's articles). Outlets bigger than a label's whole share
    (a few hold 8% of the data) stay in training, so validation looks like a set of unseen outlets
    of ordinary size, as new outlets met in production do."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64)
    outlets, inverse = np.unique(np.asarray(sources, dtype=object).astype(str), return_inverse=True)
    counts = np.zeros((len(outlets), len(LABELS)), dtype=np.float64)   # (outlets, labels)
    np.add.at(counts, (inverse, labels), 1.0)
    target = counts.sum(axis=0) * val_fraction                          # (labels,)
    load = np.zeros(len(LABELS))
    in_val = np.zeros(len(outlets), dtype=bool)
    for o in rng.permutation(len(outlets)):
        if np.all(load + counts[o] <= target + 0.5):
            in_val[o] = True
            load += counts[o]
    # Small data: outlets can be too big for a label's share. Give such a label its smallest outlet
    # rather than no validation at all, as long as training keeps another outlet of that label.
    majority = counts.argmax(axis=1)
    for lab in range(len(LABELS)):
        own = np.flatnonzero(majority == lab)
        if load[lab] == 0 and len(own) >= 2:
            smallest = own[np.argmin(counts[own].sum(axis=1))]
            in_val[smallest] = True
            load += counts[smallest]
    val_rows = in_val[inverse]
    return np.flatnonzero(~val_rows), np.flatnonzero(val_rows)


def split_random(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Label-stratified random split."""
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for lab in range(len(LABELS)):
        rows = np.flatnonzero(labels == lab)
        rng.shuffle(rows)
        val.extend(rows[: round(len(rows) * val_fraction)].tolist())
    val_idx = np.array(sorted(val), dtype=np.int64)
    return np.setdiff1d(np.arange(len(labels)), val_idx), val_idx


def split_by_column(values: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows marked train / valid (valid, validation, val, dev); the rest (test, null) are left out."""
    norm = [str(v).strip().lower() if v is not None else None for v in values]
    train = np.array([i for i, v in enumerate(norm) if v == "train"], dtype=np.int64)
    val = np.array([i for i, v in enumerate(norm) if v in _VALID_NAMES], dtype=np.int64)
    return train, val, len(norm) - len(train) - len(val)


def make_split(data: LabelledData, split: str, val_fraction: float, seed: int, group_by: str = "source"
               ) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation indices for a --split value (outlet | random | column:NAME); `outlet` holds out
    whole groups of --group-by (source names or web domains)."""
    if split == "outlet":
        train, val = split_outlet(data.groups(group_by), data.labels, val_fraction, seed)
    elif split == "random":
        train, val = split_random(data.labels, val_fraction, seed)
    else:
        name = split.split(":", 1)[1]
        if data.split_values is None:
            raise UserError(f"--split {split}: column {name!r} was not read")
        train, val, left_out = split_by_column(data.split_values)
        if left_out:
            log.info(f"note: {left_out} row(s) have {name} other than train/valid and are not used")
    if len(train) == 0 or len(val) == 0:
        raise UserError(f"split {split!r} left {len(train)} training and {len(val)} validation rows; "
                        "both must be non-empty")
    return train, val
