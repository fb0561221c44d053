"""Per-outlet (and per-window) statistics over the scorer's output, with polars.

One output row per outlet and window:

- ``mean_bias_score``, ``std_bias_score`` (sample standard deviation, ddof 1) of bias_score = p_right − p_left.
- ``ci95_low`` / ``ci95_high``: Student-t interval for the mean, mean ± t(0.975, n−1) · s / √n,
  clipped to the score's range [−1, 1]; null when n = 1 (no spread to estimate). The t interval
  assumes the outlet's articles are independent draws; for bounded scores its coverage is close to
  95% from about 20 articles on, which is why outlets under --min-articles are flagged ``low_n``.
- ``outlet_label``: with the model's fitted outlet rule (--model, its outlet_rule.json; training/outlet_rule.py)
  left below its lower threshold, right above its upper one, else center; ``label_set``: the labels the
  outlet could have at --set-level (split-conformal, wider for outlets with few articles). With
  --label-rule fixed, or without a rule: left if the mean is below −T, right if above +T, else center
  (T = --label-threshold, default 1/3), and ``label_set`` null.
- ``seen_in_training`` / ``domain_seen_in_training``: whether the model (--model, its
  training_outlets.json) was trained on articles of this outlet's source name / of its URLs' registered
  domain. A seen outlet's position is in-sample: the model remembers it, and it says little about how the
  model places outlets it never saw. Null without --model, for a model directory without the file, and
  (domain) for an outlet none of whose rows has a URL.
- ``delta_vs_previous_window``: this window's mean minus the mean of the outlet's previous window
  that has articles (``previous_window_start`` names it); null for the first window and for ``all``.

Which scores: without --model-id, the model with the latest ``scored_at`` (models tied on it: the model id
that sorts first). An article id in several input files of that model counts once: the row of the input
path that sorts first is kept, whatever the rows' ``scored_at`` (ids whose rows name different outlets are
left out and counted).

Dates are parsed from ``YYYY-MM-DD`` (with any time after it), ``M/D/YY`` and ``M/D/YYYY``. A date that
is missing, unparseable, or implausible (before 1900 or after tomorrow) cannot be placed in a window:
such rows are counted by reason in the summary; they are excluded from day/week/month aggregates and
from any --since/--until range, and included in ``window=all`` without a range.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from .. import LABELS
from ..config import AggregateConfig
from ..errors import UserError
from ..metrics import t_critical
from ..models.files import TRAINING_OUTLETS_FILE
from ..outlets import (
    HOST_PATTERN,
    INPUT_COLUMN,
    NO_SOURCE,
    TrainingOutlets,
    choose_model,
    first_rows_lazy,
    fixed_thresholds,
    label_expr,
    read_training_outlets,
    registered_domain_expr,
)
from ..schema import (
    BIAS_SCORE,
    CONFIDENCE,
    DATE,
    ID,
    LABEL,
    MODEL_ID,
    SCORED_AT,
    SOURCE,
    URL_COLUMNS,
)
from ..storage.io import atomic_write_parquet, check_output_dir, exists, expand_inputs, write_json
from ..storage.layout import (
    AGGREGATE_PART,
    Layout,
    aggregate_part,
    aggregate_summary,
    aggregate_window_dir,
    manifest_root,
    quarantine_root,
    scores_root,
)
from ..training.outlet_rule import RULE_FILE, OutletRule, read_outlet_rule

if TYPE_CHECKING:
    import polars as pl

SCORE_COLUMNS = (ID, SOURCE, DATE, LABEL, BIAS_SCORE, CONFIDENCE, MODEL_ID, SCORED_AT)  # what aggregate reads
CI_METHOD = "student-t: mean ± t(0.975, n-1)·s/√n, clipped to [-1, 1]; null for n = 1"
MIN_YEAR = 1900


@dataclass
class AggregateSummary:
    """What one aggregate run read, chose, excluded and wrote."""

    output_path: str
    summary_path: str
    window: str
    outlet_key: str
    model_id: str
    model_ids_found: list[str]
    input_files: int
    input_rows: int
    duplicate_rows: int
    rows_without_score: int
    invalid_score_rows: int
    conflicting_ids: int
    conflicting_rows: int
    conflicting_examples: list[str]
    files_left_corpus: int
    rows_left_corpus: int
    aggregated_articles: int
    outlets: int
    rows: int
    low_n_rows: int
    unplaceable_dates: dict[str, int]
    unplaceable_examples: list[str]
    excluded_rows: dict[str, int]
    domain_fallback_rows: int
    mapped_rows: int
    aggregated_at: str
    label_rule: str = "fixed"  # what outlet_label came from: the model's fitted outlet rule, or ±T
    label_thresholds: list[float] | None = None  # (lower, upper) cut points of the mean that outlet_label used
    outlets_seen_in_training: int | None = None  # outlets whose source or domain the model trained on
    articles_from_seen_outlets: int | None = None
    ci_method: str = CI_METHOD
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------- inputs

@dataclass
class ScoreParts:
    """The score parts to aggregate: for a `score` output directory, the parts of the manifest entries
    whose input still holds the content that was scored (a deleted or rewritten input is left out, with a
    count); for a bare directory of score files, every file. `inputs` maps each part to the input path that
    orders duplicate ids; `promised` maps the part of each entry used (present or not) to its model id and
    the rows its entry says it holds; `damaged` lists (model id, URL) of entries that cannot be read."""

    files: list[str]
    inputs: dict[str, str]
    left_corpus_files: int = 0
    left_corpus_rows: int = 0
    promised: dict[str, tuple[str, int]] = field(default_factory=dict)
    damaged: list[tuple[str, str]] = field(default_factory=list)


def _output_root(scores: str) -> str | None:
    """The `score` output directory that `scores` is or is the scores/ folder of (it has a manifest)."""
    for root in (scores.rstrip("/"), os.path.dirname(scores.rstrip("/"))):
        if root and exists(manifest_root(root)):
            return root
    return None


def score_parts(scores: str) -> ScoreParts:
    if not scores:
        raise UserError("--scores is required: the output directory of `score`")
    from ..storage.corpus import check_manifest, live_inputs

    root = _output_root(scores)
    if root is not None:
        parts = ScoreParts([], {})
        for check in check_manifest(root):
            entry = check.entry
            if entry is None:
                parts.damaged.append((check.model_id, check.url))
                continue
            live = live_inputs(entry, root)
            if not live:  # the input was deleted or rewritten since: not part of the corpus as it is now
                parts.left_corpus_files += 1
                parts.left_corpus_rows += int(entry.get("rows_scored", 0))
                continue
            part = Layout(root, entry["model_id"]).score_part(entry["key"])
            parts.promised[part] = (entry["model_id"], entry["rows_scored"])
            if check.problem is None:
                parts.files.append(part)
                parts.inputs[part] = live[0]
        if parts.damaged and not parts.files:
            _check_promises(parts, parts.damaged[0][0])
        if not parts.files:
            raise UserError(f"{scores!r}: no scored file of the corpus as it is now "
                            f"({parts.left_corpus_files} scored input(s) were deleted or rewritten since); "
                            "run `score` first")
        return parts
    sub = scores_root(scores)
    if exists(sub):
        files = expand_inputs([sub])
    elif exists(quarantine_root(scores)):
        raise UserError(f"{scores!r} has quarantine/ but no scores/: the score run wrote no scores yet")
    else:
        files = expand_inputs([scores])
    return ScoreParts(files, {f: f for f in files})


def _check_promises(parts: ScoreParts, model: str) -> None:
    """Refuse to aggregate `model` on fewer rows than its manifest promises: an entry that cannot be read,
    or whose score part is gone or holds other than the rows it names. `score` redoes exactly those."""
    from ..storage.io import parquet_file

    damaged = [url for m, url in parts.damaged if m == model]
    if damaged:
        raise UserError(f"{len(damaged)} manifest entr{'y' if len(damaged) == 1 else 'ies'} of model {model} "
                        f"cannot be read (not JSON or keys missing), first {damaged[0]}; run `score` again over "
                        "the same input: it rescores the file(s) and rewrites the entries")
    promised = held = 0
    short = []
    for part, (m, rows) in parts.promised.items():
        if m != model:
            continue
        try:
            found = parquet_file(part).metadata.num_rows if part in parts.inputs else 0
        except UserError:
            found = 0
        promised, held = promised + rows, held + found
        if found != rows:
            short.append(part)
    if short:
        raise UserError(f"{len(short)} manifest entr{'y' if len(short) == 1 else 'ies'} of model {model} promise "
                        f"rows the score parts do not hold ({held} of {promised} rows there; first {short[0]}); "
                        "run `score` again over the same input: it rescores those files")


def read_outlet_map(path: str) -> dict[str, str]:
    """CSV with a header and two columns: outlet name as found (or domain), canonical name. A chain
    (A,B and B,C) maps each name to the end of its chain (A and B to C); a cycle (A,B and B,A) is an error."""
    if not os.path.isfile(path):
        raise UserError(f"--outlet-map {path!r} not found; give a CSV with columns name,canonical")
    mapping: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or len(rows[0]) < 2:
        raise UserError(f"--outlet-map {path!r}: needs a header and two columns (name,canonical)")
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise UserError(f"--outlet-map {path!r} line {line}: needs a name and a canonical name, got {row}")
        name, canonical = row[0].strip(), row[1].strip()
        if mapping.get(name, canonical) != canonical:
            raise UserError(f"--outlet-map {path!r} line {line}: {name!r} is mapped twice "
                            f"({mapping[name]!r} and {canonical!r})")
        mapping[name] = canonical
    return _chains_resolved(mapping, path)


def _chains_resolved(mapping: dict[str, str], path: str) -> dict[str, str]:
    """Each name mapped to the end of its chain, so no article is reported under a name the map renames
    again (A→B, B→C: A's articles under C, not B); a cycle has no end and is refused, naming it."""
    resolved = {}
    for name, target in mapping.items():
        seen = [name]
        while target in mapping and mapping[target] != target:
            if target in seen:
                cycle = " -> ".join([*seen[seen.index(target):], target])
                raise UserError(f"--outlet-map {path!r}: the names map in a cycle ({cycle}), so none of them has a "
                                "canonical name; map each of them to the one name to report")
            seen.append(target)
            target = mapping[target]
        resolved[name] = target
    return resolved


def _parsed_date(text: pl.Expr) -> pl.Expr:
    import polars as pl

    text = text.str.strip_chars()
    # Order matters: M/D/YY before M/D/YYYY, or 9/6/17 would become the year 17.
    return pl.coalesce(text.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False),
                       text.str.to_date("%m/%d/%y", strict=False),
                       text.str.to_date("%m/%d/%Y", strict=False))


def _date_status(missing: pl.Expr, parsed: pl.Expr) -> pl.Expr:
    import polars as pl

    latest = dt.date.today() + dt.timedelta(days=1)
    return (pl.when(missing).then(pl.lit("missing"))
            .when(parsed.is_null()).then(pl.lit("unparseable"))
            .when((parsed.dt.year() < MIN_YEAR) | (parsed > pl.lit(latest))).then(pl.lit("implausible"))
            .otherwise(pl.lit("ok")))


def _with_dates(rows: pl.LazyFrame, dtype) -> pl.LazyFrame:
    """Add _status (ok / missing / unparseable / implausible) and _date (placeable dates only).
    A corpus holds few distinct date strings: each is parsed once and joined back."""
    import polars as pl

    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        parsed = pl.col(DATE).cast(pl.Date)
        status = _date_status(pl.col(DATE).is_null(), parsed)
        return rows.with_columns(_status=status).with_columns(
            _date=pl.when(pl.col("_status") == "ok").then(parsed))
    rows = rows.with_columns(_raw_date=pl.col(DATE).cast(pl.String).fill_null(""))
    dates = _collect(rows.select(pl.col("_raw_date").unique()))
    parsed = _parsed_date(pl.col("_raw_date"))
    dates = dates.with_columns(_status=_date_status(pl.col("_raw_date").str.strip_chars() == "", parsed),
                               _parsed=parsed)
    dates = dates.select("_raw_date", "_status", _date=pl.when(pl.col("_status") == "ok").then(pl.col("_parsed")))
    return rows.join(dates.lazy(), on="_raw_date", how="left").drop("_raw_date")


def _with_outlet(rows: pl.LazyFrame, cfg: AggregateConfig, names: list[str]) -> pl.LazyFrame:
    """Add _outlet (the outlet key), _fallback (keyed by source name for want of a URL) and _domain (the
    registered domain of the row's URL, null without one). Domains are worked out once per distinct host
    and joined back: hosts are few, URLs are not."""
    import polars as pl

    source = pl.col(SOURCE).cast(pl.String).fill_null(NO_SOURCE)
    urls = [c for c in URL_COLUMNS if c in names]
    if cfg.outlet_key == "domain" and not urls:
        raise UserError("--outlet-key domain needs a url or source_url column in the scores; "
                        "score input that has one, or use --outlet-key source with --outlet-map")
    if urls:
        rows = rows.with_columns(
            _host=pl.coalesce([pl.col(c).cast(pl.String).str.extract(HOST_PATTERN, 1) for c in urls]))
        hosts = _collect(rows.select(pl.col("_host").unique().drop_nulls()))
        hosts = hosts.with_columns(_domain=registered_domain_expr(pl.col("_host")))
        rows = rows.join(hosts.lazy(), on="_host", how="left").drop("_host")
    else:
        rows = rows.with_columns(_domain=pl.lit(None, dtype=pl.String))
    if cfg.outlet_key == "source":
        return rows.with_columns(_outlet=source, _fallback=pl.lit(False))
    return rows.with_columns(_outlet=pl.coalesce("_domain", source), _fallback=pl.col("_domain").is_null())


def _model_files_note(cfg: AggregateConfig, trained: TrainingOutlets | None, rule: OutletRule | None) -> str | None:
    """One line on what the model directory (--model) could not give: its training outlets, its rule, both."""
    T = f"±{cfg.label_threshold:.3g}"
    if not cfg.model:
        return (f"no --model given: outlet_label uses the fixed {T} rule, and label_set, seen_in_training and "
                "domain_seen_in_training are null; give the model directory the scores came from")
    no_rule = rule is None and cfg.label_rule == "fitted"
    if trained is None and no_rule:
        return (f"{cfg.model} has no {TRAINING_OUTLETS_FILE} or {RULE_FILE} (trained before they were recorded): "
                f"outlet_label uses the fixed {T} rule, and label_set, seen_in_training and domain_seen_in_training "
                "are null; retrain to fill them")
    if trained is None:
        return (f"{cfg.model} has no {TRAINING_OUTLETS_FILE} (a model trained before it was recorded): "
                "seen_in_training and domain_seen_in_training are null; retrain to fill them")
    if no_rule:
        return (f"{cfg.model} has no {RULE_FILE} (not a linear model, or trained before the rule): outlet_label "
                f"uses the fixed {T} rule and label_set is null")
    return None


def _with_seen(rows: pl.LazyFrame, trained: TrainingOutlets | None) -> pl.LazyFrame:
    """Add _source_seen / _domain_seen: whether the model trained on this row's source name / URL domain
    (null where that cannot be told)."""
    import polars as pl

    if trained is None:
        unknown = pl.lit(None, dtype=pl.Boolean)
        return rows.with_columns(_source_seen=unknown, _domain_seen=unknown)
    source = pl.col(SOURCE).cast(pl.String)
    return rows.with_columns(
        _source_seen=source.is_in(list(trained.sources)).fill_null(False),
        _domain_seen=pl.when(pl.col("_domain").is_not_null()).then(pl.col("_domain").is_in(list(trained.domains))))


def _choose_model(lf: pl.LazyFrame, wanted: str | None) -> tuple[str, list[str], list[str]]:
    """The model to aggregate (outlets.choose_model: `wanted`, else the latest scored_at), every model found,
    and a note when several were found and none was asked for."""
    import polars as pl

    latest = _collect(lf.group_by(MODEL_ID).agg(pl.col(SCORED_AT).max().alias("last")))
    model, found = choose_model({str(m): last for m, last in latest.iter_rows()}, wanted)
    notes = [] if wanted is not None or len(found) == 1 else [
        (f"scores hold {len(found)} models ({', '.join(found)}); aggregated the most recently scored, "
         f"{found[0]}; choose another with --model-id")]
    return model, found, notes


def _window_start(window: str) -> pl.Expr:
    import polars as pl

    date = pl.col("_date")
    return {"day": date, "week": date.dt.truncate("1w"), "month": date.dt.month_start()}[window]


def _window_end(window: str) -> pl.Expr:
    import polars as pl

    start = pl.col("window_start")
    return {"day": start, "week": start + pl.duration(days=6), "month": start.dt.month_end()}[window]


def _collect(frame: pl.LazyFrame) -> pl.DataFrame:
    import polars as pl

    try:
        return frame.collect()
    except (pl.exceptions.SchemaError, pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError) as exc:
        raise UserError(f"the scores could not be read as one table ({type(exc).__name__}: {exc}); "
                        "aggregate the output of one `score` version at a time") from exc


# ------------------------------------------------------------------------------------------------ main

def outlet_aggregates(cfg: AggregateConfig) -> AggregateSummary:
    """Aggregate one model's article scores per outlet (and window) into
    `aggregate_part(cfg.output, window)` (layout.py), replacing that window's previous output.

    Interval: Student-t (see the module docstring). Labels: outlets.label_expr (fitted rule, else ±T)."""
    if not cfg.output:
        raise UserError("--output is required: the directory for the aggregates")
    check_output_dir(cfg.output)
    found_parts = score_parts(cfg.scores)
    scan, schema = _scan_scores(cfg.scores, found_parts.files)
    model, found, notes = _choose_model(scan, cfg.model_id)
    _check_promises(found_parts, model)
    trained = read_training_outlets(cfg.model)
    rule = read_outlet_rule(cfg.model) if cfg.label_rule == "fitted" else None
    missing = _model_files_note(cfg, trained, rule)
    if missing:
        notes.append(missing)
    articles = _articles(scan, schema, cfg, model, found_parts.inputs, trained)
    keep, counts, dates = _counts(articles.rows, cfg)
    table = _apply_rule(_aggregate_rows(articles.rows.filter(keep), cfg, model), rule, cfg.set_level)
    out_path = atomic_write_parquet(table.to_arrow(), aggregate_part(cfg.output, cfg.window))
    _remove_stale_parts(aggregate_window_dir(cfg.output, cfg.window))
    summary = _summary(cfg, found_parts, articles, counts, dates, table, rule,
                       out_path=out_path, model=model, found=found, notes=notes)
    write_json(summary.summary_path, {"config": cfg.to_dict(), **summary.to_dict()})
    return summary


def _scan_scores(scores: str, files: list[str]) -> tuple[pl.LazyFrame, pl.Schema]:
    """The score files as one lazy frame (with each row's part path), refused when it lacks a column."""
    import polars as pl

    scan = pl.scan_parquet(files, hive_partitioning=False, missing_columns="insert", extra_columns="ignore",
                           include_file_paths="_part")
    try:
        schema = scan.collect_schema()
    except (pl.exceptions.ComputeError, OSError) as exc:
        raise UserError(f"cannot read the scores under {scores!r} as Parquet: {exc}") from exc
    names = schema.names()
    missing = [c for c in SCORE_COLUMNS if c not in names]
    if missing:
        raise UserError(f"scores under {scores!r} lack column(s) {', '.join(missing)} "
                        f"(found: {', '.join(names)}); give the output directory of `score`")
    return scan, schema


@dataclass
class _Articles:
    """The chosen model's articles, one row each (in memory, as a lazy frame), and what choosing them left out."""

    rows: pl.LazyFrame
    input_rows: int
    conflicts: pl.DataFrame


def _articles(scan: pl.LazyFrame, schema: pl.Schema, cfg: AggregateConfig, model: str, inputs: dict[str, str],
              trained: TrainingOutlets | None) -> _Articles:
    """`model`'s rows keyed by outlet, dated, marked seen, with one row per article id (outlets.first_rows_lazy:
    the duplicate-id rule `evaluate` applies too) and the --outlet-map applied."""
    import polars as pl

    mapping = read_outlet_map(cfg.outlet_map) if cfg.outlet_map else {}
    names = schema.names()
    rows = scan.filter(pl.col(MODEL_ID) == model).select(
        ID, SOURCE, DATE, LABEL, BIAS_SCORE, CONFIDENCE, SCORED_AT, "_part", *[c for c in URL_COLUMNS if c in names])
    input_rows = _collect(rows.select(pl.len())).item()
    rows = rows.with_columns(pl.col("_part").replace_strict(inputs, default=pl.col("_part"), return_dtype=pl.String)
                             .alias(INPUT_COLUMN))
    rows = _with_seen(_with_dates(_with_outlet(rows, cfg, names), schema[DATE]), trained)
    rows, conflicts = first_rows_lazy(rows, _collect)
    rows = rows.with_columns(_mapped=pl.col("_outlet").is_in(list(mapping)), _outlet=pl.col("_outlet").replace(mapping))
    # One pass over the files; the counts and the aggregates read this projection in memory.
    rows = _collect(rows.select(DATE, LABEL, BIAS_SCORE, CONFIDENCE, "_outlet", "_fallback", "_mapped",
                                "_status", "_date", "_source_seen", "_domain_seen")).lazy()
    return _Articles(rows, input_rows, conflicts)


def _filters(cfg: AggregateConfig) -> tuple[pl.Expr, pl.Expr, pl.Expr, dict[str, pl.Expr]]:
    """(present, valid, keep, checks): rows with a score, rows whose score is usable, rows aggregated, and each
    reason a scored row is left out (by name)."""
    import polars as pl

    bias, conf = pl.col(BIAS_SCORE).cast(pl.Float64), pl.col(CONFIDENCE).cast(pl.Float64)
    present = bias.is_not_null() & conf.is_not_null()
    # NaN, ±inf or out-of-range numbers never reach a mean or a label: counted and left out
    valid = bias.is_finite() & conf.is_finite() & bias.is_between(-1.0, 1.0) & conf.is_between(0.0, 1.0)
    scored = present & valid
    placed = pl.col("_status") == "ok"
    keep = scored
    checks = {}
    if cfg.window != "all" or cfg.since or cfg.until:
        keep = keep & placed
        checks["unplaceable date"] = scored & ~placed
    if cfg.since:
        since = dt.date.fromisoformat(cfg.since)
        keep = keep & (pl.col("_date") >= since)
        checks["before --since"] = scored & placed & (pl.col("_date") < since)
    if cfg.until:
        until = dt.date.fromisoformat(cfg.until)
        keep = keep & (pl.col("_date") <= until)
        checks["after --until"] = scored & placed & (pl.col("_date") > until)
    return present, valid, keep, checks


def _counts(rows: pl.LazyFrame, cfg: AggregateConfig) -> tuple[pl.Expr, dict, dict]:
    """(keep, counts, dates): the rows to aggregate; rows without a score, with an invalid one, keyed by source
    for want of a URL, mapped, kept and left out by each check (`excluded`); unplaceable dates by reason, and
    examples."""
    import polars as pl

    present, valid, keep, checks = _filters(cfg)
    counts = _collect(rows.select(
        n=pl.len(), no_score=(~present).sum(), invalid=(present & ~valid).sum(), fallback=pl.col("_fallback").sum(),
        mapped=pl.col("_mapped").sum(), kept=keep.sum(),
        **{f"x{i}": expr.sum() for i, expr in enumerate(checks.values())})).row(0, named=True)
    counts["excluded"] = {name: counts.pop(f"x{i}") for i, name in enumerate(checks)}
    unplaced = rows.filter(pl.col("_status") != "ok")
    status_counts = _collect(unplaced.group_by("_status").len()).sort("_status")
    examples = _collect(unplaced.select(pl.col(DATE).cast(pl.String).fill_null("<null>"))
                        .unique().sort(DATE).head(5))[DATE].to_list()
    dates = {"unplaceable_dates": {r["_status"]: r["len"] for r in status_counts.iter_rows(named=True)},
             "unplaceable_examples": examples}
    return keep, counts, dates


def _summary(  # noqa: PLR0913 (private, called once: the result of each step of outlet_aggregates it reports)
    cfg: AggregateConfig, found_parts: ScoreParts, articles: _Articles, counts: dict, dates: dict,
    table: pl.DataFrame, rule: OutletRule | None, *, out_path: str, model: str, found: list[str], notes: list[str],
) -> AggregateSummary:
    import polars as pl

    conflicts = articles.conflicts
    if counts["kept"] == 0:
        notes.append("no articles left to aggregate after the date filters; wrote an empty table")
    summary = AggregateSummary(
        output_path=out_path, summary_path=aggregate_summary(cfg.output, cfg.window), window=cfg.window,
        outlet_key=cfg.outlet_key, model_id=model, model_ids_found=found, input_files=len(found_parts.files),
        input_rows=articles.input_rows,
        duplicate_rows=articles.input_rows - counts["n"] - int(conflicts["n"].sum()),
        rows_without_score=counts["no_score"], invalid_score_rows=counts["invalid"],
        conflicting_ids=conflicts.height, conflicting_rows=int(conflicts["n"].sum()),
        conflicting_examples=conflicts[ID].head(5).cast(pl.String).to_list(),
        files_left_corpus=found_parts.left_corpus_files, rows_left_corpus=found_parts.left_corpus_rows,
        aggregated_articles=counts["kept"], outlets=table["outlet"].n_unique(), rows=table.height,
        low_n_rows=int(table["low_n"].sum()), **dates, excluded_rows=counts["excluded"],
        domain_fallback_rows=counts["fallback"], mapped_rows=counts["mapped"],
        aggregated_at=table["aggregated_at"][0].isoformat() if table.height else _now().isoformat(),
        notes=notes, label_rule="fitted" if rule else "fixed",
        label_thresholds=list(rule.thresholds if rule else fixed_thresholds(cfg.label_threshold)),
        **_seen_counts(table))
    notes += _count_notes(summary, conflicts)
    return summary


def _count_notes(summary: AggregateSummary, conflicts: pl.DataFrame) -> list[str]:
    """One note for each kind of row left out or keyed otherwise, and for outlets the model trained on."""
    notes = []
    if summary.invalid_score_rows:
        notes.append(f"{summary.invalid_score_rows} row(s) had a NaN, infinite or out-of-range bias_score or "
                     "confidence and were left out")
    if conflicts.height:
        notes.append(f"{conflicts.height} article id(s) appear in several input files under different outlets "
                     f"({conflicts['n'].sum()} rows, e.g. {', '.join(map(str, conflicts[ID].head(3)))}) and "
                     "were left out")
    if summary.files_left_corpus:
        notes.append(f"{summary.files_left_corpus} scored input file(s) ({summary.rows_left_corpus} rows) "
                     "were deleted or rewritten since they were scored and were left out; rerun `score`")
    if summary.domain_fallback_rows:
        notes.append(f"{summary.domain_fallback_rows} row(s) had no usable URL and were keyed by their source name")
    if summary.outlets_seen_in_training:
        notes.append(f"{summary.outlets_seen_in_training} of {summary.outlets} outlet(s) "
                     f"({summary.articles_from_seen_outlets} of {summary.aggregated_articles} articles) are ones the "
                     "model was trained on: their positions are in-sample (seen_in_training), not what it does on "
                     "outlets it never saw")
    return notes


def _apply_rule(table: pl.DataFrame, rule: OutletRule | None, level: float) -> pl.DataFrame:
    """outlet_label and label_set (at `level`) from the model's fitted outlet rule; without one, the fixed ±T
    label _aggregate_rows made and a null label_set."""
    import polars as pl

    if rule is None:
        return table.with_columns(label_set=pl.lit(None, dtype=pl.List(pl.String)))
    mean, n = table["mean_bias_score"].to_numpy(), table["n_articles"].to_numpy()
    labels = [LABELS[i] for i in rule.labels(mean)] if table.height else []
    sets = rule.sets(mean, n, level) if table.height else []
    table = table.with_columns(outlet_label=pl.Series(labels, dtype=pl.String),
                               label_set=pl.Series(sets, dtype=pl.List(pl.String)))
    order = table.columns
    order.insert(order.index("outlet_label") + 1, order.pop(order.index("label_set")))
    return table.select(order)


def _seen_counts(table: pl.DataFrame) -> dict:
    """Outlets (distinct, over all windows) the model trained on, by source or domain, and their articles."""
    import polars as pl

    if not table.height or table["seen_in_training"].null_count() == table.height:
        return {}
    seen = table.filter(pl.col("seen_in_training").fill_null(False)
                        | pl.col("domain_seen_in_training").fill_null(False))
    return {"outlets_seen_in_training": seen["outlet"].n_unique(),
            "articles_from_seen_outlets": int(seen["n_articles"].sum())}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _aggregate_rows(rows: pl.LazyFrame, cfg: AggregateConfig, model: str) -> pl.DataFrame:
    import polars as pl

    bias = pl.col(BIAS_SCORE).cast(pl.Float64)
    label = pl.col(LABEL).cast(pl.String).str.to_lowercase()
    stats = [pl.len().alias("n_articles"), bias.mean().alias("mean_bias_score"),
             bias.std(ddof=1).alias("std_bias_score"),
             *[(label == name).mean().alias(f"share_{name}") for name in ("left", "center", "right")],
             pl.col(CONFIDENCE).cast(pl.Float64).mean().alias("mean_confidence"),
             # any of the outlet's rows (null when none can tell: no --model, or no URL for the domain)
             pl.when(pl.col("_source_seen").is_not_null().any()).then(pl.col("_source_seen").any())
             .alias("seen_in_training"),
             pl.when(pl.col("_domain_seen").is_not_null().any()).then(pl.col("_domain_seen").any())
             .alias("domain_seen_in_training")]
    if cfg.window == "all":
        grouped = rows.group_by("_outlet").agg(pl.col("_date").min().alias("window_start"),
                                               pl.col("_date").max().alias("window_end"), *stats)
    else:
        grouped = (rows.with_columns(window_start=_window_start(cfg.window))
                   .group_by("_outlet", "window_start").agg(*stats)
                   .with_columns(window_end=_window_end(cfg.window)))
    frame = _collect(grouped.rename({"_outlet": "outlet"}).sort("outlet", "window_start", nulls_last=False))

    n = frame["n_articles"]
    t_values = {int(k): t_critical(int(k) - 1) for k in n.unique().to_list() if k >= 2}
    half = (pl.col("n_articles").replace_strict(t_values, default=None, return_dtype=pl.Float64)
            * pl.col("std_bias_score") / pl.col("n_articles").cast(pl.Float64).sqrt())
    mean = pl.col("mean_bias_score")
    previous = pl.col("window_start").shift(1).over("outlet")
    if cfg.window == "all":
        delta, previous = pl.lit(None, dtype=pl.Float64), pl.lit(None, dtype=pl.Date)
    else:
        delta = mean - mean.shift(1).over("outlet")
    frame = frame.with_columns(
        window=pl.lit(cfg.window),
        ci95_low=(mean - half).clip(-1.0, 1.0), ci95_high=(mean + half).clip(-1.0, 1.0),
        outlet_label=label_expr(mean, fixed_thresholds(cfg.label_threshold)),
        low_n=pl.col("n_articles") < cfg.min_articles,
        delta_vs_previous_window=delta, previous_window_start=previous,
        model_id=pl.lit(model), aggregated_at=pl.lit(_now(), dtype=pl.Datetime("us", "UTC")))
    return frame.select(
        "outlet", "window", pl.col("window_start").cast(pl.Date), pl.col("window_end").cast(pl.Date),
        pl.col("n_articles").cast(pl.Int64), "mean_bias_score", "std_bias_score", "ci95_low", "ci95_high",
        "share_left", "share_center", "share_right", "mean_confidence", "outlet_label", "low_n",
        pl.col("seen_in_training").cast(pl.Boolean), pl.col("domain_seen_in_training").cast(pl.Boolean),
        "delta_vs_previous_window", pl.col("previous_window_start").cast(pl.Date), "model_id", "aggregated_at")


def _remove_stale_parts(out_dir: str) -> None:
    """A window's directory holds exactly one data file after a run: older parts would be read twice."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(out_dir)
    for name in fs.ls(path, detail=False):
        if name.endswith(".parquet") and os.path.basename(name) != AGGREGATE_PART:
            fs.rm(name)
