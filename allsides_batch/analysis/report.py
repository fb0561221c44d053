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
from ..layout import (
    AGGREGATE_PART,
    REPORT_OUTLET_CHART,
    REPORT_TABLE,
    REPORT_TREND_CHART,
    WINDOW_PARTITION,
    aggregate_part,
    aggregate_summary,
)
from ..storage import atomic_write_text, join

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


def read_aggregates(aggregates_dir: str, window: str) -> pl.DataFrame:
    return pl.read_parquet(aggregate_part(aggregates_dir, window))


def label_threshold(aggregates_dir: str, window: str) -> float:
    """The --label-threshold the aggregates were made with (from their summary), for the chart's bands."""
    path = aggregate_summary(aggregates_dir, window)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            return float(json.load(fh).get("config", {}).get("label_threshold", OUTLET_LABEL_THRESHOLD))
    return OUTLET_LABEL_THRESHOLD


def latest_per_outlet(frame: pl.DataFrame) -> pl.DataFrame:
    """Each outlet's most recent window (the whole frame when it holds one window per outlet)."""
    return frame.sort("window_start", nulls_last=False).group_by("outlet", maintain_order=True).last()


# ------------------------------------------------------------------------------------------------ charts

def outlet_chart(frame: pl.DataFrame, *, threshold: float = OUTLET_LABEL_THRESHOLD, max_outlets: int | None = None,
                 title: str | None = None, axis: str = "full") -> Figure:
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
    for lo, hi, name in ((-1, -threshold, "left"), (-threshold, threshold, "center"), (threshold, 1, "right")):
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
    ax.set_yticks(y, [f"{_short(o)} ({c})" for o, c in zip(frame["outlet"].to_list(), counts)], fontsize=8)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(*_score_range(frame, axis))
    ax.set_xlabel("mean bias score  (p_right − p_left):   ← left    center    right →")
    ax.grid(axis="x", color="0.9", lw=0.6)
    shown = f"{n} of {total} outlets (largest by articles)" if n < total else f"{n} outlets"
    zoomed = " (axis zoomed to the data)" if axis == "data" else ""
    ax.set_title(title or f"Outlet bias with 95% intervals: {shown}{zoomed}", fontsize=10)
    _legend(ax, biggest)
    fig.tight_layout()
    return fig


def _legend(ax, biggest: int) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=col, label=name) for name, col in COLOURS.items()]
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
    """Markdown table, one row per outlet sorted left to right; low_n outlets marked †."""
    frame = frame.sort("mean_bias_score")
    if max_rows is not None and frame.height > max_rows:
        frame = frame.sort("n_articles", descending=True).head(max_rows).sort("mean_bias_score")
    lines = ["| outlet | label | n | mean | 95% CI | left / center / right | confidence | Δ previous |",
             "| --- | --- | ---: | ---: | --- | --- | ---: | ---: |"]
    for r in frame.iter_rows(named=True):
        name = r["outlet"].replace("|", "\\|") + (" †" if r["low_n"] else "")
        ci = "–" if r["ci95_low"] is None else f"[{r['ci95_low']:+.2f}, {r['ci95_high']:+.2f}]"
        shares = f"{r['share_left']:.0%} / {r['share_center']:.0%} / {r['share_right']:.0%}"
        delta = "–" if r["delta_vs_previous_window"] is None else f"{r['delta_vs_previous_window']:+.2f}"
        lines.append(f"| {name} | {r['outlet_label']} | {r['n_articles']} | {r['mean_bias_score']:+.2f} | {ci} "
                     f"| {shares} | {r['mean_confidence']:.2f} | {delta} |")
    models = ", ".join(sorted(set(frame["model_id"].to_list())))
    lines += ["", (f"† fewer articles than --min-articles. Model: {models}. "
                   "Interval: Student t, mean ± t(0.975, n−1)·s/√n.")]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- write

def write_report(aggregates_dir: str, output_dir: str, outlets: list[str] | None = None, *,
                 max_outlets: int | None = ReportConfig.max_outlets, dpi: int = ReportConfig.dpi,
                 axis: str = ReportConfig.axis) -> ReportPaths:
    """The outlet chart (latest window per outlet; `all` when present), the trend chart (finest window
    present besides `all`) and the table, under the names of layout.REPORT_FILES. Returns the paths written."""
    if not output_dir:
        raise UserError("--output is required: the directory for the charts and the table")
    windows = available_windows(aggregates_dir)
    outlet_window = windows[0]
    frame = latest_per_outlet(read_aggregates(aggregates_dir, outlet_window))
    os.makedirs(output_dir, exist_ok=True)
    notes: list[str] = []
    fig = outlet_chart(frame, threshold=label_threshold(aggregates_dir, outlet_window), max_outlets=max_outlets,
                       axis=axis)
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
    return ReportPaths(outlet_chart=outlet_png, trend_chart=trend_png, table=table, outlet_window=outlet_window,
                       trend_window=trend_window, outlets=frame.height, notes=notes)


def _save(fig: Figure, path: str, dpi: int) -> str:
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=dpi)
    os.replace(tmp, path)  # a reader never sees half a PNG
    return path
