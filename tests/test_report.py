"""report: the charts are valid PNGs of sensible size on 1 outlet and on 80; the table and the
files written from real `aggregate` output."""

from __future__ import annotations

import datetime as dt
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from allsides_batch.analysis.aggregate import outlet_aggregates
from allsides_batch.analysis.report import outlet_chart, summary_table, trend_chart, write_report
from allsides_batch.config import AggregateConfig
from allsides_batch.errors import UserError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def aggregates_frame(n_outlets: int, windows: int = 1, seed: int = 0) -> pl.DataFrame:
    """A frame with aggregate's output schema (one row per outlet and window)."""
    rng = np.random.default_rng(seed)
    rows = []
    for o in range(n_outlets):
        base = rng.uniform(-0.9, 0.9)
        for w in range(windows):
            n = int(rng.integers(1, 400))
            mean = float(np.clip(base + rng.normal(0, 0.05), -1, 1))
            half = None if n == 1 else 1.0 / np.sqrt(n)
            rows.append({
                "outlet": f"Outlet number {o:03d} with a rather long name" if o % 7 == 0 else f"Outlet {o:03d}",
                "window": "month" if windows > 1 else "all", "window_start": dt.date(2020, 1 + w, 1),
                "window_end": dt.date(2020, 1 + w, 28), "n_articles": n, "mean_bias_score": mean,
                "std_bias_score": None if n == 1 else 0.5,
                "ci95_low": None if half is None else max(-1.0, mean - half),
                "ci95_high": None if half is None else min(1.0, mean + half),
                "share_left": 0.3, "share_center": 0.3, "share_right": 0.4, "mean_confidence": 0.6,
                "outlet_label": "left" if mean < -1 / 3 else "right" if mean > 1 / 3 else "center",
                "low_n": n < 20, "delta_vs_previous_window": None if w == 0 else 0.01,
                "previous_window_start": None, "model_id": "m1",
                "aggregated_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)})
    return pl.DataFrame(rows)


@pytest.mark.parametrize("n_outlets", [1, 80])
def test_outlet_chart_png(tmp_path, n_outlets):
    frame = aggregates_frame(n_outlets)
    fig = outlet_chart(frame)
    out = tmp_path / "outlets.png"
    fig.savefig(out, dpi=100)
    width, height = png_size(out)
    assert width == 900
    # one row per outlet: the chart grows with the outlets so 80 labels stay readable (>= 20 px per row)
    assert height >= 20 * n_outlets and height <= 2 * 22 * max(n_outlets, 12) + 200
    assert 5_000 < out.stat().st_size < 300_000
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == n_outlets
    means = frame.sort("mean_bias_score")["outlet"].to_list()
    assert [lab.rsplit(" (", 1)[0] for lab in labels][:3] == [m if len(m) <= 38 else m[:37] + "…" for m in means][:3]


def test_outlet_chart_caps_outlets_and_trend_chart(tmp_path):
    frame = aggregates_frame(80)
    fig = outlet_chart(frame, max_outlets=30)
    assert len(fig.axes[0].get_yticklabels()) == 30 and "30 of 80" in fig.axes[0].get_title()
    monthly = aggregates_frame(8, windows=5)
    fig = trend_chart(monthly)
    assert len(fig.axes[0].get_lines()) == 6 + 1  # six largest outlets and the zero line
    fig = trend_chart(monthly, ["Outlet 001", "Outlet 002"])
    out = tmp_path / "trend.png"
    fig.savefig(out, dpi=100)
    assert png_size(out) == (900, 420)
    # a weak or calibrated model scores near 0: axis="data" zooms to the intervals, and says so
    narrow = monthly.with_columns(pl.col("mean_bias_score") / 20, pl.col("ci95_low") / 20, pl.col("ci95_high") / 20)
    lo, hi = trend_chart(narrow, axis="data").axes[0].get_ylim()
    assert -0.1 < lo < hi < 0.1
    ax = outlet_chart(narrow, axis="data").axes[0]
    assert ax.get_xlim()[1] - ax.get_xlim()[0] < 0.2 and "zoomed" in ax.get_title()
    assert outlet_chart(narrow).axes[0].get_xlim() == (-1.02, 1.02)
    with pytest.raises(UserError, match="not in the aggregates"):
        trend_chart(monthly, ["Nobody"])
    with pytest.raises(UserError, match="empty"):
        outlet_chart(frame.clear())


def test_summary_table_rows_and_marks():
    frame = aggregates_frame(5)
    md = summary_table(frame)
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith(("| outlet", "| ---"))]
    assert len(rows) == 5
    means = [float(r.split("|")[4]) for r in rows]
    assert means == sorted(means)  # left to right
    assert md.count("†") == int(frame["low_n"].sum()) + 1  # each low_n outlet, plus the footnote


def test_write_report_from_aggregate_output(tmp_path):
    """End to end from score-shaped Parquet: aggregate (all + month), then report; also via the CLI."""
    from test_aggregate import score_row, write_scores

    rng = np.random.default_rng(3)
    rows = [score_row(f"{o}-{j}", f"Outlet {o}", f"2020-{1 + j % 4:02d}-1{j % 9}", float(p), float(0.9 - p))
            for o in range(12) for j, p in enumerate(rng.uniform(0.05, 0.85, size=10 + 3 * o))]
    scores = write_scores(tmp_path / "s", rows)
    for window in ("all", "month"):
        outlet_aggregates(AggregateConfig(scores=str(scores), output=str(tmp_path / "agg"), window=window))
    paths = write_report(str(tmp_path / "agg"), str(tmp_path / "report"), ["Outlet 3"])
    assert paths.outlet_window == "all" and paths.trend_window == "month" and paths.outlets == 12
    for png in (paths.outlet_chart, paths.trend_chart):
        assert png_size(Path(png))[0] > 0 and Path(png).stat().st_size < 300_000
    assert Path(paths.table).read_text().count("| Outlet ") == 12
    cli = subprocess.run([sys.executable, "-m", "allsides_batch", "report", "--aggregates", str(tmp_path / "agg"),
                          "--output", str(tmp_path / "cli"), "--outlet", "Outlet 1", "--outlet", "Outlet 2"],
                         capture_output=True, text=True, check=False)
    assert cli.returncode == 0, cli.stderr
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["outlets.png", "summary.md", "trend.png"]
    bad = subprocess.run([sys.executable, "-m", "allsides_batch", "report", "--aggregates", str(tmp_path / "nope"),
                          "--output", str(tmp_path / "cli")], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and bad.stderr.count("\n") == 1


@pytest.mark.slow
def test_score_aggregate_report_end_to_end(tmp_path, articles_sample, tiny_model_dir):
    """The real chain on real articles: score (tiny model) → aggregate by domain, all and month → report."""
    from allsides_batch.config import ScoreConfig
    from allsides_batch.scoring import score_corpus

    scored = score_corpus(ScoreConfig(model=tiny_model_dir, input=[str(articles_sample)], output=str(tmp_path / "s"),
                                      max_length=32, device="cpu", progress=False))
    for window in ("all", "month"):
        summary = outlet_aggregates(AggregateConfig(scores=str(tmp_path / "s"), output=str(tmp_path / "agg"),
                                                    window=window, outlet_key="domain", min_articles=5))
        assert summary.model_id == scored.model_id and summary.duplicate_rows == 0
        placed = summary.aggregated_articles + sum(summary.excluded_rows.values())
        assert placed == scored.scored_rows
    paths = write_report(str(tmp_path / "agg"), str(tmp_path / "report"))
    assert paths.outlets > 40 and png_size(Path(paths.outlet_chart))[1] > 40 * 20
    assert Path(paths.trend_chart).stat().st_size > 5_000
