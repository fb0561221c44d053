"""Charts and a markdown table from per-outlet aggregates (the output of `aggregate`).

Each piece is a function returning a matplotlib Figure or a markdown string, so a Prefect flow can
publish the same things as artifacts; `write_report` writes them to files. Figures are built
without pyplot (no global backend state): `Figure` renders through Agg when saved.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import polars as pl
from matplotlib.figure import Figure

from ..config import OUTLET_LABEL_THRESHOLD, ReportConfig
from ..errors import UserError
from ..outlets import fixed_thresholds
from ..schema import BIAS_SCORE, SOURCE
from ..storage.io import atomic_write_text, check_output_dir, join
from ..storage.layout import (
    AGGREGATE_PART,
    REPORT_OUTLET_CHART,
    REPORT_TABLE,
    REPORT_TREND_CHART,
    REPORT_UNSEEN_CHART,
    REPORT_UNSEEN_TABLE,
    WINDOW_PARTITION,
    aggregate_part,
    aggregate_summary,
)

COLOURS = {"left": "#2166ac", "center": "#8c6bb1", "right": "#b2182b"}
WINDOW_ORDER = ("all", "month", "week", "day")  # outlet chart prefers the coarsest window


@dataclass
class ReportPaths:
    """Files one report wrote; trend_chart is None when the aggregates hold no day/week/month window."""

    outlet_chart: str
    trend_chart: str | None
    table: str
    outlet_window: str
    trend_window: str | None
    outlets: int
    notes: list[str] = field(default_factory=list)
    unseen_chart: str | None = None
    unseen_table: str | None = None
    unseen: dict | None = None  # outlet Spearman, accuracy and set coverage of the out-of-fold outlets

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------- reading

def available_windows(aggregates_dir: str) -> list[str]:
    """Windows present under `aggregates_dir` (each with its aggregate_part), coarsest first."""
    if not os.path.isdir(aggregates_dir):
        raise UserError(f"--aggregates {aggregates_dir!r} not found; give the output directory of `aggregate`")
    found = [w for w in WINDOW_ORDER if os.path.isfile(aggregate_part(aggregates_dir, w))]
    if not found:
        raise UserError(f"{aggregates_dir!r} holds no {WINDOW_PARTITION}<day|week|month|all>/{AGGREGATE_PART}; "
                        "run `aggregate` first")
    return found


# The columns of `aggregate`'s output that the charts and the table read.
REPORT_COLUMNS = ("outlet", "window_start", "window_end", "n_articles", "mean_bias_score", "ci95_low", "ci95_high",
                  "share_left", "share_center", "share_right", "mean_confidence", "outlet_label", "low_n",
                  "delta_vs_previous_window", "model_id")


def read_aggregates(aggregates_dir: str, window: str) -> pl.DataFrame:
    """One window's aggregates; a file that is not `aggregate`'s output is a UserError naming what it lacks."""
    path = aggregate_part(aggregates_dir, window)
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise UserError(f"cannot read {path!r} as Parquet ({exc}); give the output directory of `aggregate`"
                        .replace("\n", " ")) from exc
    missing = [c for c in REPORT_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path!r} lacks the aggregate column(s) {', '.join(missing)}: it is not `aggregate`'s "
                        "output; give --aggregates the output directory of `aggregate`")
    return frame


def label_bands(aggregates_dir: str, window: str) -> tuple[float, float]:
    """The cut points outlet_label used (from the aggregates' summary: the fitted outlet rule's thresholds,
    or ±--label-threshold), for the chart's bands."""
    path = aggregate_summary(aggregates_dir, window)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            summary = json.load(fh)
        if summary.get("label_thresholds"):
            lo, hi = summary["label_thresholds"]
            return float(lo), float(hi)
        return fixed_thresholds(float(summary.get("config", {}).get("label_threshold", OUTLET_LABEL_THRESHOLD)))
    return fixed_thresholds()


def seen_flags(frame: pl.DataFrame) -> list[bool | None]:
    """Per row: True where the model was trained on the outlet (by source name or URL domain), False where
    it was not, None where the aggregates cannot tell (made without --model, or before the columns existed)."""
    cols = [c for c in ("seen_in_training", "domain_seen_in_training") if c in frame.columns]
    if not cols:
        return [None] * frame.height
    out = []
    for values in zip(*(frame[c].to_list() for c in cols)):
        known = [v for v in values if v is not None]
        out.append(any(known) if known else None)
    return out


SEEN_MEANING = ("seen: the model was trained on articles of this outlet (its source name or web domain), so its "
                "position is in-sample: the model remembers it, and it says little about how the model places "
                "outlets it never saw")


def latest_per_outlet(frame: pl.DataFrame) -> pl.DataFrame:
    """Each outlet's most recent window (the whole frame when it holds one window per outlet)."""
    return frame.sort("window_start", nulls_last=False).group_by("outlet", maintain_order=True).last()


# ------------------------------------------------------------------------------------------------ charts

def outlet_chart(frame: pl.DataFrame, *, threshold: float = OUTLET_LABEL_THRESHOLD, max_outlets: int | None = None,
                 title: str | None = None, axis: str = "full", caption: str | None = None,
                 bands: tuple[float, float] | None = None) -> Figure:
    """Outlets on a left-to-right axis at their mean bias score with 95% intervals; marker area by
    article count, colour by outlet label, hollow markers for low_n. One row per outlet, sorted by
    mean, so the chart stays readable with hundreds of outlets (the figure grows in height).
    axis="data" zooms the score axis to the intervals shown, and says so in the title."""
    if frame.is_empty():
        raise UserError("no outlets to chart: the aggregates are empty (check aggregate's date filters)")
    total = frame.height
    if max_outlets is not None and total > max_outlets:
        frame = frame.sort("n_articles", descending=True).head(max_outlets)
    frame = frame.sort("mean_bias_score")  # leftmost outlet at the top: the points run top-left to bottom-right
    n = frame.height
    fig = Figure(figsize=(9.0, max(2.6, 1.3 + 0.22 * n)))
    ax = fig.add_subplot()
    cut_lo, cut_hi = bands if bands is not None else fixed_thresholds(threshold)  # where outlet_label changes
    for lo, hi, name in ((-1, cut_lo, "left"), (cut_lo, cut_hi, "center"), (cut_hi, 1, "right")):
        ax.axvspan(lo, hi, color=COLOURS[name], alpha=0.06, lw=0)
    ax.axvline(0, color="0.6", lw=0.8)
    y = list(range(n))
    mean = frame["mean_bias_score"].to_list()
    low, high = frame["ci95_low"].to_list(), frame["ci95_high"].to_list()
    has_ci = [i for i in y if low[i] is not None and high[i] is not None]
    ax.hlines([y[i] for i in has_ci], [low[i] for i in has_ci], [high[i] for i in has_ci], color="0.35", lw=1.2)
    counts = frame["n_articles"].to_list()
    biggest = max(counts)
    sizes = [12 + 220 * (c / biggest) ** 0.5 for c in counts]
    colours = [COLOURS.get(lab, "0.5") for lab in frame["outlet_label"].to_list()]
    low_n = frame["low_n"].to_list()
    faces = ["white" if flag else col for flag, col in zip(low_n, colours)]
    ax.scatter(mean, y, s=sizes, c=faces, edgecolors=colours, linewidths=1.3, zorder=3)
    seen = seen_flags(frame)
    framed = [i for i in y if seen[i]]
    if framed:  # outlets the model trained on: a black square around the point
        ax.scatter([mean[i] for i in framed], framed, s=[sizes[i] * 2.2 for i in framed], marker="s",
                   facecolors="none", edgecolors="black", linewidths=1.0, zorder=4)
    # latest windows that differ between outlets: each point says which window it is
    starts = frame["window_start"].to_list() if "window_start" in frame.columns else [None] * n
    windows = frame["window"].to_list() if "window" in frame.columns else ["all"] * n
    dated = len(set(starts)) > 1 and any(w != "all" for w in windows)
    ax.set_yticks(y, [f"{_short(o)} ({c}){f' · {w} of {d}' if dated else ''}{' ■ seen' if flag else ''}"
                      for o, c, flag, w, d in zip(frame["outlet"].to_list(), counts, seen, windows, starts)],
                  fontsize=8)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(*_score_range(frame, axis))
    ax.set_xlabel("mean bias score  (p_right − p_left):   ← left    center    right →")
    ax.grid(axis="x", color="0.9", lw=0.6)
    shown = f"{n} of {total} outlets (largest by articles)" if n < total else f"{n} outlets"
    zoomed = " (axis zoomed to the data)" if axis == "data" else ""
    n_seen = sum(1 for flag in seen if flag)
    in_sample = (f"\n■ {n_seen} of {n} outlets were in the model's training data: their positions are in-sample"
                 if n_seen else "")
    caption = f"\n{caption}" if caption else ""
    ax.set_title(title or f"Outlet bias with 95% intervals: {shown}{zoomed}{caption}{in_sample}", fontsize=10)
    _legend(ax, biggest, seen=n_seen > 0)
    fig.tight_layout()
    return fig


def _legend(ax, biggest: int, seen: bool = False) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=col, label=name) for name, col in COLOURS.items()]
    if seen:
        handles.append(Line2D([], [], marker="s", ls="", markerfacecolor="none", color="black",
                              label="■ seen in training (in-sample)"))
    handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="white", color="0.3",
                          label="low_n: fewer than min. articles"))
    handles.append(Line2D([], [], color="0.35", lw=1.2, label="95% interval"))
    handles.append(Line2D([], [], marker="o", ls="", color="0.5", markersize=(12 + 220) ** 0.5,
                          label=f"{biggest} articles"))
    ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.9)


def _short(name: str, width: int = 38) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _score_range(frame: pl.DataFrame, axis: str) -> tuple[float, float]:
    """[-1, 1], or the span of the means and intervals (with 0) plus a margin."""
    if axis == "full":
        return -1.02, 1.02
    values = [v for c in ("mean_bias_score", "ci95_low", "ci95_high") for v in frame[c].to_list() if v is not None]
    lo, hi = min(values + [0.0]), max(values + [0.0])
    pad = max(0.05 * (hi - lo), 0.005)
    return max(-1.02, lo - pad), min(1.02, hi + pad)


def trend_chart(frame: pl.DataFrame, outlets: list[str] | None = None, *, top: int = 6, axis: str = "full") -> Figure:
    """Mean bias score per window for chosen outlets (default: the `top` largest), with 95% bands."""
    if frame.is_empty():
        raise UserError("no windows to chart: the aggregates are empty")
    known = set(frame["outlet"].to_list())
    if outlets:
        unknown = [o for o in outlets if o not in known]
        if unknown:
            raise UserError(f"outlet(s) not in the aggregates: {', '.join(unknown)}; "
                            "names must match the aggregates' outlet column")
    else:
        totals = frame.group_by("outlet").agg(pl.col("n_articles").sum()).sort(["n_articles", "outlet"],
                                                                               descending=[True, False])
        outlets = totals["outlet"].head(top).to_list()
    fig = Figure(figsize=(9.0, 4.2))
    ax = fig.add_subplot()
    palette = [f"C{i}" for i in range(10)]
    for i, outlet in enumerate(outlets):
        rows = frame.filter(pl.col("outlet") == outlet).sort("window_start")
        x, m = rows["window_start"].to_list(), rows["mean_bias_score"].to_list()
        colour = palette[i % len(palette)]
        ax.plot(x, m, marker="o", ms=3, lw=1.4, color=colour, label=_short(outlet, 30))
        band = rows.filter(pl.col("ci95_low").is_not_null())
        ax.fill_between(band["window_start"].to_list(), band["ci95_low"].to_list(), band["ci95_high"].to_list(),
                        color=colour, alpha=0.12, lw=0)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_ylim(*_score_range(frame.filter(pl.col("outlet").is_in(outlets)), axis))
    ax.set_ylabel("mean bias score (← left, right →)")
    window = frame["window"][0] if "window" in frame.columns else "window"
    zoomed = " (axis zoomed to the data)" if axis == "data" else ""
    ax.set_title(f"Outlet bias per {window} with 95% bands{zoomed}", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: never hides a line
    ax.grid(color="0.92", lw=0.6)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------- table

def summary_table(frame: pl.DataFrame, max_rows: int | None = None) -> str:
    """Markdown table, one row per outlet: outlets with at least --min-articles first, each group sorted left
    to right; low_n outlets marked †."""
    if max_rows is not None and frame.height > max_rows:
        frame = frame.sort("n_articles", descending=True).head(max_rows)
    frame = frame.sort(["low_n", "mean_bias_score"])
    lines = ["| outlet | label | n | mean | 95% CI | left / center / right | confidence | Δ previous | seen |",
             "| --- | --- | ---: | ---: | --- | --- | ---: | ---: | --- |"]
    seen = seen_flags(frame)
    for r, flag in zip(frame.iter_rows(named=True), seen):
        name = r["outlet"].replace("|", "\\|") + (" †" if r["low_n"] else "")
        ci = "–" if r["ci95_low"] is None else f"[{r['ci95_low']:+.2f}, {r['ci95_high']:+.2f}]"
        shares = f"{r['share_left']:.0%} / {r['share_center']:.0%} / {r['share_right']:.0%}"
        delta = "–" if r["delta_vs_previous_window"] is None else f"{r['delta_vs_previous_window']:+.2f}"
        lines.append(f"| {name} | {r['outlet_label']} | {r['n_articles']} | {r['mean_bias_score']:+.2f} | {ci} "
                     f"| {shares} | {r['mean_confidence']:.2f} | {delta} | {_seen_cell(flag)} |")
    models = ", ".join(sorted(set(frame["model_id"].to_list())))
    n_seen = sum(1 for flag in seen if flag)
    lines += ["", (f"† fewer articles than --min-articles. Model: {models}. "
                   "Interval: Student t, mean ± t(0.975, n−1)·s/√n.")]
    if n_seen:
        lines.append(f"{n_seen} of {frame.height} outlets are marked seen. {SEEN_MEANING.capitalize()}.")
    elif all(flag is None for flag in seen):
        lines.append("seen –: not known (aggregated without --model); a model's training outlets make their "
                     "positions in-sample.")
    return "\n".join(lines) + "\n"


def chart_caption(frame: pl.DataFrame, window: str) -> str:
    """Model id, window and the dates the points cover, for the chart's title."""
    models = ", ".join(sorted(set(frame["model_id"].to_list()))) if "model_id" in frame.columns else "?"
    starts = [d for d in frame["window_start"].to_list() if d is not None]
    ends = [d for d in frame["window_end"].to_list() if d is not None]
    dates = f"{min(starts)} to {max(ends)}" if starts and ends else "undated"
    which = "all dates" if window == "all" else f"each outlet's latest {window}"
    return f"model {models} · {which} · {dates}"


def _seen_cell(flag: bool | None) -> str:
    return "–" if flag is None else "yes" if flag else "no"


# ------------------------------------------------------------------------------------------------- write

def write_report(aggregates_dir: str, output_dir: str, outlets: list[str] | None = None, *,
                 max_outlets: int | None = ReportConfig.max_outlets, dpi: int = ReportConfig.dpi,
                 axis: str = ReportConfig.axis, model_dir: str | None = None) -> ReportPaths:
    """The outlet chart (latest window per outlet; `all` when present), the trend chart (finest window
    present besides `all`) and the table, under the names of layout.REPORT_FILES. Returns the paths written."""
    if not output_dir:
        raise UserError("--output is required: the directory for the charts and the table")
    check_output_dir(output_dir)
    windows = available_windows(aggregates_dir)
    outlet_window = windows[0]
    frame = latest_per_outlet(read_aggregates(aggregates_dir, outlet_window))
    os.makedirs(output_dir, exist_ok=True)
    notes: list[str] = []
    fig = outlet_chart(frame, bands=label_bands(aggregates_dir, outlet_window), max_outlets=max_outlets,
                       axis=axis, caption=chart_caption(frame, outlet_window))
    outlet_png = _save(fig, join(output_dir, REPORT_OUTLET_CHART), dpi)
    trend_window = next((w for w in reversed(windows) if w != "all"), None)
    trend_png = None
    if trend_window is None:
        notes.append("no day/week/month aggregates: run `aggregate --window month` for the trend chart")
    else:
        trend_png = _save(trend_chart(read_aggregates(aggregates_dir, trend_window), outlets, axis=axis),
                          join(output_dir, REPORT_TREND_CHART), dpi)
    heading = f"# Outlet bias ({outlet_window if outlet_window == 'all' else 'latest ' + outlet_window})\n\n"
    table = atomic_write_text(join(output_dir, REPORT_TABLE), heading + summary_table(frame))
    paths = ReportPaths(outlet_chart=outlet_png, trend_chart=trend_png, table=table, outlet_window=outlet_window,
                        trend_window=trend_window, outlets=frame.height, notes=notes)
    if model_dir:
        _unseen_report(model_dir, output_dir, paths, max_outlets=max_outlets, dpi=dpi)
    return paths


# ------------------------------------------------------------------------------- outlets it never saw

def unseen_outlets(model_dir: str, level: float = 0.9) -> tuple[pl.DataFrame, dict]:
    """From the model's out-of-fold article scores (each scored by a model of its recipe that never saw its
    outlet): per outlet its mean, AllSides label, fitted label and label set; and outlet Spearman plus
    outlet_rule.rule_report's figures (accuracy fitted and ±1/3 over outlets with the rule's min_articles,
    set coverage and size over all)."""
    import numpy as np

    from .. import LABELS
    from ..metrics import spearman
    from ..training.outlet_rule import OOF_FILE, outlets_of, read_outlet_rule, rule_report

    rule = read_outlet_rule(model_dir)
    path = os.path.join(model_dir, OOF_FILE)
    if rule is None or not os.path.isfile(path):
        raise UserError(f"{model_dir} has no out-of-fold scores ({OOF_FILE}) and outlet rule: train a linear model "
                        "with --linear-outlet-folds (the default) to draw how it places outlets it never saw")
    oof = pl.read_parquet(path)
    labels = np.array([LABELS.index(v) for v in oof["label"].to_list()])
    out = outlets_of(oof[SOURCE].to_list(), labels, oof[BIAS_SCORE].to_numpy())
    sets = rule.sets(out.mean, out.n, level)
    frame = pl.DataFrame({
        "outlet": out.names, "n_articles": out.n, "oof_mean": out.mean,
        "allsides_label": [LABELS[int(y)] for y in out.label],
        "outlet_label": [LABELS[int(y)] for y in rule.labels(out.mean)], "label_set": sets})
    big = out.n >= rule.min_articles
    stats = {**rule_report(out, rule, level, sets), "articles": int(out.n.sum()),
             "spearman": spearman(out.mean[big], out.label[big]), "min_articles": rule.min_articles,
             "thresholds": list(rule.thresholds)}
    return frame, stats


def unseen_chart(frame: pl.DataFrame, stats: dict, *, max_outlets: int | None = 60) -> Figure:
    """Out-of-fold outlet means left to right, coloured by the outlet's AllSides label; a cross where the
    fitted rule labels it wrongly; the fitted thresholds as dashed lines; the label set beside each point."""
    big = frame.filter(pl.col("n_articles") >= stats["min_articles"])
    which = f"outlets with ≥ {stats['min_articles']} articles"
    if big.height >= 5:
        frame = big
    else:  # a small training set: every outlet, the largest first if too many
        which = f"outlets (fewer than 5 have ≥ {stats['min_articles']} articles: all shown)"
    total = frame.height
    if max_outlets is not None and total > max_outlets:
        frame = frame.sort("n_articles", descending=True).head(max_outlets)
    frame = frame.sort("oof_mean")
    n = frame.height
    fig = Figure(figsize=(9.0, max(2.8, 1.6 + 0.22 * n)))
    ax = fig.add_subplot()
    lo, hi = stats["thresholds"]
    for x in (lo, hi):
        ax.axvline(x, color="0.3", lw=0.9, ls="--")
    ax.axvline(0, color="0.75", lw=0.8)
    y = list(range(n))
    mean, truth = frame["oof_mean"].to_list(), frame["allsides_label"].to_list()
    right = [a == b for a, b in zip(frame["outlet_label"].to_list(), truth)]
    for ok, marker in ((True, "o"), (False, "X")):
        idx = [i for i in y if right[i] is ok]
        if idx:
            ax.scatter([mean[i] for i in idx], idx, c=[COLOURS[truth[i]] for i in idx], marker=marker, s=46, zorder=3)
    short = {"left": "L", "center": "C", "right": "R"}
    for i, s in enumerate(frame["label_set"].to_list()):
        ax.annotate("{" + ",".join(short[v] for v in s) + "}", (mean[i], i), xytext=(7, -3),
                    textcoords="offset points", fontsize=7, color="0.3")
    ax.set_yticks(y, [f"{_short(o)} ({c})" for o, c in zip(frame["outlet"].to_list(), frame["n_articles"].to_list())],
                  fontsize=8)
    ax.set_ylim(n - 0.5, -0.5)
    span = max(abs(v) for v in mean + [lo, hi]) * 1.25 + 0.02
    ax.set_xlim(-span, span)
    ax.set_xlabel("out-of-fold mean bias score (p_right − p_left):   ← left    right →")
    ax.grid(axis="x", color="0.9", lw=0.6)
    shown = f"{n} of {total}" if n < total else f"{n}"
    ax.set_title(
        f"How the model places outlets it never saw: {shown} {which}\n"
        f"outlet Spearman {_num(stats['spearman'])} · outlet accuracy {_num(stats['accuracy_fitted'])} fitted rule "
        f"(±1/3: {_num(stats['accuracy_fixed'])}) · {stats['level']:.0%} sets cover {stats['coverage']:.2f} "
        f"of {stats['all_outlets']} outlets", fontsize=9)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=col, label=f"AllSides: {name}") for name, col in COLOURS.items()]
    handles += [Line2D([], [], marker="X", ls="", color="0.3", label="fitted label wrong"),
                Line2D([], [], color="0.3", ls="--", label="fitted thresholds"),
                Line2D([], [], ls="", label="{L,C,R}: label set")]
    ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.9)
    fig.tight_layout()
    return fig


def _num(value: float) -> str:
    return "–" if value != value else f"{value:.2f}"  # NaN: no outlet large enough to measure


def unseen_table(frame: pl.DataFrame, stats: dict) -> str:
    lines = ["# How the model places outlets it never saw (out of fold)\n",
             f"Every article scored by a model of the same recipe that never saw its outlet. Over the "
             f"{stats['outlets']} outlets with at least {stats['min_articles']} articles: outlet Spearman "
             f"{stats['spearman']:.3f}, outlet accuracy {stats['accuracy_fitted']:.3f} with the fitted rule "
             f"(thresholds {stats['thresholds'][0]:+.3f} / {stats['thresholds'][1]:+.3f}, fitted on these same "
             f"outlets, so slightly optimistic; docs/results.md measures it on held-out folds) and "
             f"{stats['accuracy_fixed']:.3f} with ±1/3. {stats['level']:.0%} label sets cover "
             f"{stats['coverage']:.3f} of all {stats['all_outlets']} outlets (mean size {stats['set_size']:.2f}).\n",
             "| outlet | n | out-of-fold mean | AllSides | outlet_label | label_set |",
             "| --- | ---: | ---: | --- | --- | --- |"]
    ordered = frame.with_columns(big=pl.col("n_articles") >= stats["min_articles"]).sort(
        ["big", "oof_mean"], descending=[True, False])
    for r in ordered.iter_rows(named=True):
        name = r["outlet"].replace("|", "\\|") + ("" if r["big"] else " †")
        lines.append(f"| {name} | {r['n_articles']} | {r['oof_mean']:+.3f} | {r['allsides_label']} | "
                     f"{r['outlet_label']} | {', '.join(r['label_set'])} |")
    lines += ["", f"† fewer than {stats['min_articles']} articles (listed after the others)."]
    return "\n".join(lines) + "\n"


def _unseen_report(model_dir: str, output_dir: str, paths: ReportPaths, *, max_outlets: int | None, dpi: int) -> None:
    from ..training.outlet_rule import OOF_FILE

    if not os.path.isfile(os.path.join(model_dir, OOF_FILE)):
        paths.notes.append(f"{model_dir} has no {OOF_FILE}: no picture of how it places outlets it never saw "
                           "(train a linear model with --linear-outlet-folds, the default)")
        return
    frame, stats = unseen_outlets(model_dir)
    paths.unseen_chart = _save(unseen_chart(frame, stats, max_outlets=min(max_outlets or 60, 60)),
                               join(output_dir, REPORT_UNSEEN_CHART), dpi)
    paths.unseen_table = atomic_write_text(join(output_dir, REPORT_UNSEEN_TABLE), unseen_table(frame, stats))
    paths.unseen = stats


def _save(fig: Figure, path: str, dpi: int) -> str:
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=dpi)
    os.replace(tmp, path)  # a reader never sees half a PNG
    return path
