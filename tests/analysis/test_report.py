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


@pytest.mark.slow
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


@pytest.mark.slow
def test_write_report_from_aggregate_output(tmp_path):
    """End to end from score-shaped Parquet: aggregate (all + month), then report; also via the CLI."""
    from score_rows import score_row, write_scores

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


# A: January (2 articles) and February; B: January only; C: January and March. Latest months differ.
def _windows_scores(tmp_path: Path) -> Path:
    from score_rows import HAND, score_row, write_scores

    return write_scores(tmp_path / "s", HAND + [score_row("c1", "C", "2020-01-15", 0.2, 0.5),    # +0.3, right
                                                score_row("c2", "C", "2020-03-02", 0.7, 0.2)])   # -0.5, left


def _aggregate(scores: Path, out: Path, window: str, **kwargs) -> None:
    outlet_aggregates(AggregateConfig(scores=str(scores), output=str(out), window=window, min_articles=2, **kwargs))


@pytest.fixture
def chart_spy(monkeypatch):
    """Records the frame write_report passes to the real outlet_chart, and the figure it drew."""
    from allsides_batch.analysis import report

    calls = []
    real = report.outlet_chart

    def spy(frame, **kwargs):
        fig = real(frame, **kwargs)
        calls.append({"frame": frame, "fig": fig})
        return fig

    monkeypatch.setattr(report, "outlet_chart", spy)
    return calls


def drawn(fig) -> tuple[list[str], list[float], list[str]]:
    """The outlet chart's tick labels, marker x positions (mean scores) and marker edge colours."""
    from matplotlib.collections import PathCollection
    from matplotlib.colors import to_hex

    ax = fig.axes[0]
    points = [c for c in ax.collections if isinstance(c, PathCollection)][0]  # [1]: the seen outlets' squares
    return ([t.get_text() for t in ax.get_yticklabels()], [round(float(x), 6) for x in points.get_offsets()[:, 0]],
            [to_hex(c) for c in points.get_edgecolors()])


def bands(fig) -> list[tuple[float, float]]:
    return [(round(r.get_x(), 6), round(r.get_x() + r.get_width(), 6)) for r in fig.axes[0].patches]


FOOTNOTE = ("† fewer articles than --min-articles. Model: m1. Interval: Student t, mean ± t(0.975, n−1)·s/√n.\n"
            "seen –: not known (aggregated without --model); a model's training outlets make their positions "
            "in-sample.\n")
HEADER = ("| outlet | label | n | mean | 95% CI | left / center / right | confidence | Δ previous | seen |\n"
          "| --- | --- | ---: | ---: | --- | --- | ---: | ---: | --- |\n")


def test_report_without_all_uses_each_outlets_latest_window(tmp_path, chart_spy):
    """No window=all: the outlet chart and table take each outlet's own latest month (the coarsest window
    present; week is there too), and the trend chart the finest."""
    scores = _windows_scores(tmp_path)
    for window in ("month", "week"):
        _aggregate(scores, tmp_path / "agg", window)
    paths = write_report(str(tmp_path / "agg"), str(tmp_path / "report"))
    assert (paths.outlet_window, paths.trend_window, paths.outlets) == ("month", "week", 3)
    (call,) = chart_spy
    used = {r["outlet"]: (r["window"], r["window_start"]) for r in call["frame"].iter_rows(named=True)}
    assert used == {"A": ("month", dt.date(2020, 2, 1)), "B": ("month", dt.date(2020, 1, 1)),
                    "C": ("month", dt.date(2020, 3, 1))}
    labels, xs, colours = drawn(call["fig"])
    # each outlet's latest month, not Jan, and the label says which
    assert labels == ["C (1) · month of 2020-03-01", "A (1) · month of 2020-02-01", "B (1) · month of 2020-01-01"]
    assert xs == [-0.5, 0.0, 0.7]
    assert colours == ["#2166ac", "#8c6bb1", "#b2182b"]  # left, center, right at T = 1/3
    assert bands(call["fig"]) == [(-1.0, round(-1 / 3, 6)), (round(-1 / 3, 6), round(1 / 3, 6)), (round(1 / 3, 6), 1.0)]
    # Δ previous: A's February against its January (0.0 − (−0.1)), C's March against its January (−0.5 − 0.3)
    assert Path(paths.table).read_text() == "# Outlet bias (latest month)\n\n" + HEADER + (
        "| C † | left | 1 | -0.50 | – | 100% / 0% / 0% | 0.70 | -0.80 | – |\n"
        "| A † | center | 1 | +0.00 | – | 0% / 100% / 0% | 0.80 | +0.10 | – |\n"
        "| B † | right | 1 | +0.70 | – | 0% / 0% / 100% | 0.80 | – | – |\n"
        "\n" + FOOTNOTE)


def test_report_uses_all_window_when_present(tmp_path, chart_spy):
    scores = _windows_scores(tmp_path)
    for window in ("month", "all"):
        _aggregate(scores, tmp_path / "agg", window)
    paths = write_report(str(tmp_path / "agg"), str(tmp_path / "report"))
    assert (paths.outlet_window, paths.trend_window, paths.outlets) == ("all", "month", 3)
    (call,) = chart_spy
    assert set(call["frame"]["window"].to_list()) == {"all"}
    labels, xs, _ = drawn(call["fig"])
    assert labels == ["C (2)", "A (3)", "B (1)"] and xs == pytest.approx([-0.1, -0.2 / 3, 0.7], abs=1e-6)
    # A: mean of −0.6, 0.4, 0.0; C: of 0.3, −0.5; both intervals clipped to [−1, 1]
    assert Path(paths.table).read_text() == "# Outlet bias (all)\n\n" + HEADER + (
        "| C | center | 2 | -0.10 | [-1.00, +1.00] | 50% / 0% / 50% | 0.60 | – | – |\n"
        "| A | center | 3 | -0.07 | [-1.00, +1.00] | 33% / 33% / 33% | 0.70 | – | – |\n"
        "| B † | right | 1 | +0.70 | – | 0% / 0% / 100% | 0.80 | – | – |\n"
        "\n" + FOOTNOTE)


def test_report_bands_and_labels_follow_the_aggregate_label_threshold(tmp_path, chart_spy):
    """aggregate --label-threshold 0.08: C (−0.10) is left, A (−0.07) center; the chart's bands sit at ±0.08."""
    _aggregate(_windows_scores(tmp_path), tmp_path / "agg", "all", label_threshold=0.08)
    paths = write_report(str(tmp_path / "agg"), str(tmp_path / "report"))
    (call,) = chart_spy
    assert bands(call["fig"]) == [(-1.0, -0.08), (-0.08, 0.08), (0.08, 1.0)]
    labels, _, colours = drawn(call["fig"])
    assert labels == ["C (2)", "A (3)", "B (1)"] and colours == ["#2166ac", "#8c6bb1", "#b2182b"]
    table = Path(paths.table).read_text()
    assert "| C | left | 2 | -0.10 |" in table and "| A | center | 3 | -0.07 |" in table


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


def test_outlets_the_model_trained_on_are_marked_on_chart_and_table(tmp_path, chart_spy):
    """Aggregated with --model: the outlet it trained on (A) gets a square on the chart, '■ seen' on its
    tick label, a title line with the count, and 'yes' in the table with what a seen position means."""
    from matplotlib.collections import PathCollection
    from score_rows import model_with_outlets

    scores = _windows_scores(tmp_path)
    model = model_with_outlets(tmp_path, {"A": 50}, {})
    _aggregate(scores, tmp_path / "agg", "all", model=str(model))
    paths = write_report(str(tmp_path / "agg"), str(tmp_path / "report"))
    (call,) = chart_spy
    labels, xs, _ = drawn(call["fig"])
    assert labels == ["C (2)", "A (3) ■ seen", "B (1)"]
    squares = [c for c in call["fig"].axes[0].collections if isinstance(c, PathCollection)][1]
    assert [round(float(x), 6) for x in squares.get_offsets()[:, 0]] == [xs[1]]
    assert "1 of 3 outlets were in the model's training data" in call["fig"].axes[0].get_title()
    table = Path(paths.table).read_text()
    assert "| A | center | 3 | -0.07 | [-1.00, +1.00] | 33% / 33% / 33% | 0.70 | – | yes |" in table
    assert "| C | center | 2 | -0.10 | [-1.00, +1.00] | 50% / 0% / 50% | 0.60 | – | no |" in table
    assert "1 of 3 outlets are marked seen. Seen: the model was trained on articles of this outlet" in table


def test_table_lists_outlets_with_enough_articles_first_and_the_chart_names_model_and_window(tmp_path, chart_spy):
    scores = _windows_scores(tmp_path)
    outlet_aggregates(AggregateConfig(scores=str(scores), output=str(tmp_path / "agg"), window="all", min_articles=3))
    paths = write_report(str(tmp_path / "agg"), str(tmp_path / "report"))
    rows = [line.split(" | ")[0] for line in Path(paths.table).read_text().splitlines() if line.startswith("| ")][2:]
    assert rows == ["| A", "| C †", "| B †"]  # A has 3 articles; C (−0.10) and B (+0.70) fewer, after it
    (call,) = chart_spy
    title = call["fig"].axes[0].get_title()
    assert "model m1 · all dates · 2020-01-" in title
