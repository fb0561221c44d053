"""The outlet rules, one owner for each: what an outlet is (its registered web domain, or its source
name), how a mean bias score becomes an outlet label, which row of an article id found in several
input files counts, which model's scores a command reads, and the outlets a model was trained on.

`aggregate`, `evaluate` and `report` all read these rules from here; training uses the domain rule for
outlet-grouped splits. No polars at module level: scoring and training import this module, and a GPU
worker installs no polars; the polars expressions `aggregate` needs are built inside functions.

Training outlets: kept in a model directory as `training_outlets.json`. A model places the outlets it
was trained on from memory: their positions are in-sample, and say little about how it places an outlet
it has never seen. `train` records them (source names and the registered
domains of their URLs, with article counts); `aggregate` marks each outlet `seen_in_training` /
`domain_seen_in_training`, and `evaluate` says `held_out: false` when the evaluated outlets overlap them.

```
{"version": 1, "fitted_on": "training and validation rows", "articles": 36254,
 "sources": {"CNN (Online News)": 2300, ...}, "domains": {"cnn.com": 2290, ...},
 "validation": {"articles": 3600, "sources": {...}, "domains": {...}}}
```
"sources"/"domains" are the rows the saved weights were fitted on (a linear model refit on its validation
rows includes them); "validation" holds the rows used to choose and calibrate the model.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .config import OUTLET_LABEL_THRESHOLD
from .errors import UserError
from .models.files import TRAINING_OUTLETS_FILE
from .schema import ID, SOURCE
from .storage.io import read_json

if TYPE_CHECKING:
    import polars as pl

# ------------------------------------------------------------------------------------------ outlet identity
# Registered web domains: the outlet key that groups one publisher's many AllSides source names. One
# domain hosts many source names (nytimes.com: 24, foxnews.com: 22, cnn.com: 19, most of them
# columnists), so grouping by source name lets a held-out outlet's house style into training.

# Public suffixes of two labels that are common in news URLs; the registered domain under them has
# three labels (bbc.co.uk). A full public-suffix list would be a new dependency for little gain here.
MULTI_PART_SUFFIXES = (
    "co.uk", "org.uk", "ac.uk", "gov.uk", "com.au", "net.au", "org.au", "co.nz", "co.jp", "co.in",
    "com.br", "com.mx", "co.za", "com.cn", "com.hk", "com.sg", "co.il", "com.tr", "co.kr",
)
HOST_PATTERN = r"^\s*(?:[A-Za-z][A-Za-z0-9+.\-]*://)?(?:[^@/?#\s]*@)?([^/:?#\s]+)"
_HOST = re.compile(HOST_PATTERN)
_IPV4_PATTERN = r"^\d+(\.\d+){3}$"
_IPV4 = re.compile(_IPV4_PATTERN)
NO_SOURCE = "(no source)"  # the outlet of a row without a source name


def registered_domain(url: str | None) -> str | None:
    """https://www.money.cnn.com/x → cnn.com, www.bbc.co.uk → bbc.co.uk; None when there is no host."""
    if not url:
        return None
    match = _HOST.match(url)
    if not match:
        return None
    host = match.group(1).lower().strip(".")
    if _IPV4.match(host):
        return host
    parts = host.split(".")
    if len(parts) < 2:
        return None
    if len(parts) >= 3 and ".".join(parts[-2:]) in MULTI_PART_SUFFIXES:
        return ".".join(parts[-3:])
    return ".".join(parts[-2:])


def registered_domain_expr(host: pl.Expr) -> pl.Expr:
    """registered_domain as a polars expression over a host name (`aggregate --outlet-key domain`; the host
    comes from a URL through HOST_PATTERN): www.money.cnn.com → cnn.com, www.bbc.co.uk → bbc.co.uk."""
    import polars as pl

    host = host.str.to_lowercase().str.strip_chars(".")
    parts = host.str.split(".")
    last2 = parts.list.slice(-2, 2).list.join(".")
    last3 = parts.list.slice(-3, 3).list.join(".")
    return (pl.when(host.str.contains(_IPV4_PATTERN)).then(host)
            .when(last2.is_in(list(MULTI_PART_SUFFIXES)) & (parts.list.len() >= 3)).then(last3)
            .when(host.str.contains(r"\.")).then(last2)
            .otherwise(None))


def outlet_groups(sources: list[str], urls: list[str | None] | None, group_by: str) -> list[str]:
    """The group key of each article: its source name, or its URL's registered domain (the source name
    where the URL has none)."""
    if group_by == "source" or urls is None:
        return list(sources)
    out = []
    for source, url in zip(sources, urls):
        domain = registered_domain(url)
        out.append(f"domain:{domain}" if domain else f"source:{source}")
    return out


# ---------------------------------------------------------------------------------------------- label rule
# An outlet's label from the mean bias score of its articles: left below the lower cut point, right
# above the upper one, else center. The fixed rule cuts at ±T (T = --label-threshold, default 1/3); a
# linear model's fitted outlet rule (training/outlet_rule.py) brings its own cut points.

def fixed_thresholds(threshold: float = OUTLET_LABEL_THRESHOLD) -> tuple[float, float]:
    """The fixed rule's cut points (−T, +T)."""
    return -threshold, threshold


def label_of(mean: np.ndarray, thresholds: tuple[float, float]) -> np.ndarray:
    """0 left below lo, 2 right above hi, else 1 center (the fixed rule is thresholds ±T)."""
    lo, hi = thresholds
    mean = np.asarray(mean, dtype=np.float64)
    return np.where(mean < lo, 0, np.where(mean > hi, 2, 1))


def label_expr(mean: pl.Expr, thresholds: tuple[float, float]) -> pl.Expr:
    """label_of as a polars expression giving the label's name ("left", "center", "right")."""
    import polars as pl

    lo, hi = thresholds
    return pl.when(mean < lo).then(pl.lit("left")).when(mean > hi).then(pl.lit("right")).otherwise(pl.lit("center"))


# ------------------------------------------------------------------------------------------- duplicate ids
# One article id in several input files counts once. If its rows name different outlets (source), the id
# is ambiguous: it is left out and counted, never moved to one of the outlets. Otherwise the row of the
# input path that sorts first is kept, whatever the rows' scored_at, so the choice does not depend on the
# order the files were scored in. `aggregate` and `evaluate --scores` both apply it (to the chosen model's
# rows), so they read the same articles.

INPUT_COLUMN = "_input"  # the input path of each score row (a bare score file: its own path)


@dataclass
class Conflicts:
    """Article ids left out because their rows name different outlets, and how many rows they had."""

    ids: list[str]
    rows: int


def first_rows(table: pa.Table, inputs: Sequence[str]) -> tuple[np.ndarray, Conflicts]:
    """The rule on a pyarrow table (`id`, `source`) whose i-th row came from input path `inputs[i]`: the
    indices of the rows kept (in id order) and the conflicting ids."""
    ids = table[ID].to_pylist()
    sources = [NO_SOURCE if s is None else str(s) for s in table[SOURCE].to_pylist()]
    seen: dict[Any, set[str]] = {}
    count: Counter = Counter(ids)
    for id_, source in zip(ids, sources):
        seen.setdefault(id_, set()).add(source)
    conflicting = sorted(i for i, names in seen.items() if len(names) > 1)
    left_out = set(conflicting)
    order = sorted(range(len(ids)), key=lambda i: (inputs[i], ids[i]))
    kept: dict[Any, int] = {}
    for i in order:
        if ids[i] not in left_out:
            kept.setdefault(ids[i], i)
    rows = np.array(sorted(kept.values(), key=lambda i: ids[i]), dtype=np.int64)
    return rows, Conflicts(ids=[str(i) for i in conflicting], rows=sum(count[i] for i in conflicting))


def first_rows_lazy(rows: pl.LazyFrame, collect) -> tuple[pl.LazyFrame, pl.DataFrame]:
    """The rule on a polars frame with `id`, `source` and INPUT_COLUMN: the rows kept, and the conflicting
    ids (columns id, n: their rows) in id order. `collect` runs a lazy query (the caller's error wording)."""
    import polars as pl

    sources = pl.col(SOURCE).cast(pl.String).fill_null(NO_SOURCE)
    conflicts = collect(rows.group_by(ID).agg(n=pl.len(), sources=sources.n_unique())
                        .filter(pl.col("sources") > 1).sort(ID))
    rows = rows.join(conflicts.lazy().select(ID), on=ID, how="anti")
    return rows.sort([INPUT_COLUMN, ID]).unique(subset=[ID], keep="first", maintain_order=True), conflicts


# -------------------------------------------------------------------------------------------- model choice

def choose_model(last_scored: Mapping[str, Any], wanted: str | None, where: str = "",
                 command: str = "aggregate") -> tuple[str, list[str]]:
    """The model whose scores a command reads, and every model found, most recently scored first:
    `wanted` (--model-id), else the model with the latest scored_at (`last_scored`: model id → its latest
    scored_at); models tied on it are ordered by model id, so the id that sorts first wins."""
    found = sorted(map(str, last_scored))
    found.sort(key=lambda m: (last_scored[m] is not None, last_scored[m]), reverse=True)  # stable: ties keep id order
    if not found:
        raise UserError(f"the scores{where} hold no rows: nothing to {command}")
    if wanted is not None and wanted not in found:
        raise UserError(f"--model-id {wanted!r} not in the scores{where}; found: {', '.join(found)}")
    return (wanted if wanted is not None else found[0]), found


# ---------------------------------------------------------------------------------------- training outlets

VERSION = 1


def _counts(sources: Sequence[str], urls: Sequence[str | None] | None) -> dict:
    domains = Counter(d for d in (registered_domain(u) for u in (urls or [])) if d)
    return {"articles": len(sources), "sources": dict(sorted(Counter(map(str, sources)).items())),
            "domains": dict(sorted(domains.items()))}


def training_outlets(fitted_sources: Sequence[str], fitted_urls: Sequence[str | None] | None,
                     validation_sources: Sequence[str], validation_urls: Sequence[str | None] | None,
                     refit_on_validation: bool) -> dict:
    """The JSON `train` writes: the outlets of the rows the weights were fitted on, and the validation rows'."""
    return {"version": VERSION,
            "fitted_on": "training and validation rows" if refit_on_validation else "training rows",
            **_counts(fitted_sources, fitted_urls), "validation": _counts(validation_sources, validation_urls)}


@dataclass(frozen=True)
class TrainingOutlets:
    sources: dict[str, int]
    domains: dict[str, int]
    articles: int
    fitted_on: str


def read_training_outlets(model_dir: str | None) -> TrainingOutlets | None:
    """The model directory's training outlets, or None where it has no such file (a model trained before
    they were recorded, or a hub model). A damaged file is an error that says what to do."""
    path = os.path.join(model_dir or "", TRAINING_OUTLETS_FILE)
    if not model_dir or not os.path.isfile(path):
        return None
    try:
        raw = read_json(path)
        sources = {str(k): int(v) for k, v in raw["sources"].items()}
        domains = {str(k): int(v) for k, v in raw["domains"].items()}
        return TrainingOutlets(sources=sources, domains=domains, articles=int(raw["articles"]),
                               fitted_on=str(raw.get("fitted_on", "")))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} is damaged ({type(exc).__name__}: {exc}); retrain the model, or delete the file to "
                        "aggregate without marking seen outlets") from exc
