"""aggregate: hand-computed statistics, interval coverage, outlet keying, dates, reruns, model choice."""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from score_rows import HAND, model_with_outlets, score_row, write_scores

from allsides_batch.analysis.aggregate import outlet_aggregates
from allsides_batch.config import AggregateConfig
from allsides_batch.errors import ConfigError, UserError
from allsides_batch.metrics import t_critical


def run(tmp_path: Path, scores: Path, **kwargs):
    cfg = AggregateConfig(scores=str(scores), output=str(tmp_path / "agg"), **kwargs)
    summary = outlet_aggregates(cfg)
    return summary, pq.read_table(summary.output_path).to_pylist()


def test_month_aggregates_equal_hand_computation(tmp_path):
    summary, rows = run(tmp_path, write_scores(tmp_path / "s", HAND), window="month", min_articles=2)
    got = {(r["outlet"], r["window_start"]): r for r in rows}
    assert summary.rows == 3 and summary.outlets == 2 and summary.aggregated_articles == 4
    a_jan = got[("A", dt.date(2020, 1, 1))]
    assert a_jan["window_end"] == dt.date(2020, 1, 31) and a_jan["window"] == "month"
    assert a_jan["n_articles"] == 2
    assert a_jan["mean_bias_score"] == pytest.approx(-0.1, abs=1e-6)
    assert a_jan["std_bias_score"] == pytest.approx(statistics.stdev([-0.6, 0.4]), abs=1e-6)
    half = 12.706204736 * statistics.stdev([-0.6, 0.4]) / math.sqrt(2)  # t(0.975, 1): clipped to [-1, 1]
    assert a_jan["ci95_low"] == pytest.approx(max(-1.0, -0.1 - half)) and a_jan["ci95_high"] == 1.0
    assert (a_jan["share_left"], a_jan["share_center"], a_jan["share_right"]) == (0.5, 0.0, 0.5)
    assert a_jan["mean_confidence"] == pytest.approx((0.7 + 0.6) / 2, abs=1e-6)
    assert a_jan["outlet_label"] == "center" and a_jan["low_n"] is False
    assert a_jan["delta_vs_previous_window"] is None
    a_feb = got[("A", dt.date(2020, 2, 1))]
    assert a_feb["window_end"] == dt.date(2020, 2, 29) and a_feb["n_articles"] == 1
    assert a_feb["delta_vs_previous_window"] == pytest.approx(0.0 - (-0.1), abs=1e-6)
    assert a_feb["previous_window_start"] == dt.date(2020, 1, 1)
    assert a_feb["std_bias_score"] is None and a_feb["ci95_low"] is None and a_feb["low_n"] is True
    b_jan = got[("B", dt.date(2020, 1, 1))]
    assert b_jan["outlet_label"] == "right" and b_jan["share_right"] == 1.0
    assert {r["model_id"] for r in rows} == {"m1"}


def test_week_and_all_windows(tmp_path):
    scores = write_scores(tmp_path / "s", HAND)
    _, weeks = run(tmp_path, scores, window="week")
    a = sorted((r["window_start"], r["window_end"], r["n_articles"]) for r in weeks if r["outlet"] == "A")
    # ISO weeks start on Monday: 2020-01-06 and 2020-02-03 are Mondays
    assert a == [(dt.date(2020, 1, 6), dt.date(2020, 1, 12), 2), (dt.date(2020, 2, 3), dt.date(2020, 2, 9), 1)]
    _, all_rows = run(tmp_path, scores, window="all")
    a_all = next(r for r in all_rows if r["outlet"] == "A")
    assert a_all["n_articles"] == 3 and a_all["mean_bias_score"] == pytest.approx(-0.2 / 3, abs=1e-6)
    assert (a_all["window_start"], a_all["window_end"]) == (dt.date(2020, 1, 6), dt.date(2020, 2, 3))
    assert a_all["delta_vs_previous_window"] is None


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 10, 29, 30, 99, 1000, 250_000])
def test_t_critical_matches_scipy(df):
    from scipy import stats

    assert t_critical(df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-6)


def test_interval_covers_known_mean_about_95_percent(tmp_path):
    """1,000 simulated outlets of 30 skewed, bounded scores with a known mean (seeded)."""
    rng = np.random.default_rng(7)
    a, b = 2.0, 5.0
    true_mean = 2 * a / (a + b) - 1  # scores = 2·Beta(2, 5) − 1 in [-1, 1]
    rows = []
    for o in range(1000):
        for j, s in enumerate(2 * rng.beta(a, b, size=30) - 1):
            p_left = (1 - s) / 2 * 0.9
            rows.append(score_row(f"o{o}-{j}", f"outlet{o:04d}", "2021-03-01", p_left, p_left + s))
    _, out = run(tmp_path, write_scores(tmp_path / "s", rows))
    lows, highs = np.array([r["ci95_low"] for r in out]), np.array([r["ci95_high"] for r in out])
    coverage = np.mean((lows <= true_mean) & (true_mean <= highs))
    assert len(out) == 1000 and 0.92 <= coverage <= 0.98
    # and the interval narrows like 1/sqrt(n): 4x the articles, about half the width
    rows120 = [score_row(f"x{j}", "big", "2021-03-01", (1 - s) / 2 * 0.9, (1 - s) / 2 * 0.9 + s)
               for j, s in enumerate(2 * rng.beta(a, b, size=120) - 1)]
    _, big = run(tmp_path, write_scores(tmp_path / "s2", rows120))
    ratio = (big[0]["ci95_high"] - big[0]["ci95_low"]) / np.median(highs - lows)
    assert 0.35 < ratio < 0.65


def test_domain_keying_merges_aliases(tmp_path):
    rows = [
        score_row("f1", "Fox News", "2020-01-01", 0.1, 0.8, url="https://www.foxnews.com/politics/x"),
        score_row("f2", "Fox Online News", "2020-01-02", 0.2, 0.7, url="http://foxnews.com/us/y?z=1"),
        score_row("f3", "Fox Online News", "2020-01-03", 0.2, 0.7, source_url="www.insider.foxnews.com"),
        score_row("c1", "CNN (Web News)", "2020-01-01", 0.8, 0.1, url="http://www.cnn.com/2020/a"),
        score_row("c2", "CNN - Editorial", "2020-01-01", 0.6, 0.1, url="https://money.cnn.com:443/b"),
        score_row("g1", "BBC News", "2020-01-01", 0.3, 0.3, url="https://www.bbc.co.uk/news/c"),
        score_row("n1", "No URL Daily", "2020-01-01", 0.3, 0.3),
    ]
    summary, out = run(tmp_path, write_scores(tmp_path / "s", rows), outlet_key="domain")
    counts = {r["outlet"]: r["n_articles"] for r in out}
    assert counts == {"foxnews.com": 3, "cnn.com": 2, "bbc.co.uk": 1, "No URL Daily": 1}
    assert summary.domain_fallback_rows == 1 and any("no usable URL" in n for n in summary.notes)
    _, by_source = run(tmp_path, write_scores(tmp_path / "s", rows), outlet_key="source")
    assert len(by_source) == 6


def test_outlet_map_merges_names(tmp_path):
    mapping = tmp_path / "map.csv"
    mapping.write_text("name,canonical\nFox Online News,Fox News\nCNN - Editorial,CNN\nCNN (Web News),CNN\n")
    rows = [score_row("1", "Fox News", "2020-01-01", 0.1, 0.8),
            score_row("2", "Fox Online News", "2020-01-01", 0.1, 0.8),
            score_row("3", "CNN - Editorial", "2020-01-01", 0.8, 0.1), score_row("4", "CNN (Web News)", "", 0.8, 0.1),
            score_row("5", "Reuters", "2020-01-01", 0.3, 0.3)]
    summary, out = run(tmp_path, write_scores(tmp_path / "s", rows), outlet_map=str(mapping))
    assert {r["outlet"]: r["n_articles"] for r in out} == {"Fox News": 2, "CNN": 2, "Reuters": 1}
    assert summary.mapped_rows == 3
    mapping.write_text("name,canonical\nFox News,A\nFox News,B\n")
    with pytest.raises(UserError, match="mapped twice"):
        run(tmp_path, tmp_path / "s", outlet_map=str(mapping))


MALFORMED = ["2019-05-02", "9/6/17", "0001-11-30", "", None, "yesterday", "12/30/2017", "2019-05-20T08:00:00Z"]


def test_malformed_dates_are_counted_not_lost(tmp_path):
    rows = [score_row(f"d{i}", "X", d, 0.5, 0.2) for i, d in enumerate(MALFORMED)]
    scores = write_scores(tmp_path / "s", rows)
    summary, out = run(tmp_path, scores, window="month")
    placed = sum(r["n_articles"] for r in out)
    assert placed == 4  # 2019-05 (2), 2017-09, 2017-12
    assert {r["window_start"] for r in out} == {dt.date(2019, 5, 1), dt.date(2017, 9, 1), dt.date(2017, 12, 1)}
    assert summary.unplaceable_dates == {"implausible": 1, "missing": 2, "unparseable": 1}
    assert summary.excluded_rows == {"unplaceable date": 4}
    assert placed + sum(summary.unplaceable_dates.values()) == len(MALFORMED)
    assert "0001-11-30" in summary.unplaceable_examples and "yesterday" in summary.unplaceable_examples
    on_disk = json.loads(Path(summary.summary_path).read_text())
    assert on_disk["unplaceable_dates"] == summary.unplaceable_dates
    summary_all, out_all = run(tmp_path, scores, window="all")  # no window to place: everything counts
    assert out_all[0]["n_articles"] == len(MALFORMED) and summary_all.excluded_rows == {}
    assert summary_all.unplaceable_dates == summary.unplaceable_dates


def test_since_until_filters_are_counted(tmp_path):
    rows = [score_row(f"d{i}", "X", d, 0.5, 0.2) for i, d in enumerate(MALFORMED)]
    summary, out = run(tmp_path, write_scores(tmp_path / "s", rows), since="2018-01-01", until="2019-05-10")
    assert out[0]["n_articles"] == 1
    assert summary.excluded_rows == {"unplaceable date": 4, "before --since": 2, "after --until": 1}


def test_day_window_equals_hand_computation(tmp_path):
    """--window day: one row per outlet and calendar day (a time after the date is ignored)."""
    rows = [score_row("a1", "A", "2020-01-06", 0.7, 0.1),             # -0.6
            score_row("a2", "A", "2020-01-06T23:59:00Z", 0.2, 0.6),   # +0.4, same day
            score_row("a3", "A", "1/8/2020", 0.3, 0.5),               # +0.2, two days later
            score_row("a4", "A", "2020-01-08", 0.1, 0.1),             #  0.0
            score_row("b1", "B", "1/6/20", 0.1, 0.8)]                 # +0.7
    summary, out = run(tmp_path, write_scores(tmp_path / "s", rows), window="day", min_articles=2)
    got = {(r["outlet"], r["window_start"]): r for r in out}
    jan6, jan8 = dt.date(2020, 1, 6), dt.date(2020, 1, 8)
    assert sorted(got) == [("A", jan6), ("A", jan8), ("B", jan6)] and summary.rows == 3
    assert all(r["window"] == "day" and r["window_end"] == r["window_start"] for r in out)
    a6, a8, b6 = got[("A", jan6)], got[("A", jan8)], got[("B", jan6)]
    assert (a6["n_articles"], a8["n_articles"], b6["n_articles"]) == (2, 2, 1)
    assert a6["mean_bias_score"] == pytest.approx(-0.1, abs=1e-6)
    assert a6["std_bias_score"] == pytest.approx(statistics.stdev([-0.6, 0.4]), abs=1e-6)
    assert a8["mean_bias_score"] == pytest.approx(0.1, abs=1e-6)
    assert a8["std_bias_score"] == pytest.approx(statistics.stdev([0.2, 0.0]), abs=1e-6)
    half = t_critical(1) * statistics.stdev([0.2, 0.0]) / math.sqrt(2)
    assert (a8["ci95_low"], a8["ci95_high"]) == pytest.approx((max(-1.0, 0.1 - half), min(1.0, 0.1 + half)), abs=1e-6)
    # the previous window is the previous day *with articles*: Jan 8 follows Jan 6
    assert a8["previous_window_start"] == jan6 and a8["delta_vs_previous_window"] == pytest.approx(0.2, abs=1e-6)
    assert a6["delta_vs_previous_window"] is None and a6["previous_window_start"] is None
    assert b6["mean_bias_score"] == pytest.approx(0.7, abs=1e-6) and b6["low_n"] is True and a6["low_n"] is False
    assert b6["std_bias_score"] is None and b6["ci95_low"] is None


def test_label_threshold_cuts_outlet_means(tmp_path):
    """outlet_label: mean < -T left, mean > +T right, else center (both ends of the center band included)."""
    means_ = {"L+": -0.52, "L-": -0.48, "Lx": -0.5, "R+": 0.52, "R-": 0.48, "Rx": 0.5, "Z": 0.0}
    rows = []
    for outlet in ("L+", "L-", "R+", "R-", "Z"):  # two articles 0.1 either side of the mean: the label reads the mean
        rows += [score_row(f"{outlet}{j}", outlet, "2020-01-01", 0.45 - b / 2, 0.45 + b / 2)
                 for j, b in enumerate((means_[outlet] - 0.1, means_[outlet] + 0.1))]
    # exactly on the threshold (0.75 - 0.25 = 0.5 exactly, also in float32)
    rows += [score_row("Lx", "Lx", "2020-01-01", 0.75, 0.25), score_row("Rx", "Rx", "2020-01-01", 0.25, 0.75)]
    scores = write_scores(tmp_path / "s", rows)
    summary, out = run(tmp_path, scores, label_threshold=0.5)
    got = {r["outlet"]: r for r in out}
    assert {o: r["mean_bias_score"] for o, r in got.items()} == pytest.approx(means_, abs=1e-6)
    assert {o: r["outlet_label"] for o, r in got.items()} == {
        "L+": "left", "L-": "center", "Lx": "center", "R+": "right", "R-": "center", "Rx": "center", "Z": "center"}
    assert json.loads(Path(summary.summary_path).read_text())["config"]["label_threshold"] == 0.5
    _, default = run(tmp_path, scores)  # T = 1/3: ±0.48 and ±0.5 are outside the center band
    assert {r["outlet"]: r["outlet_label"] for r in default} == {
        "L+": "left", "L-": "left", "Lx": "left", "R+": "right", "R-": "right", "Rx": "right", "Z": "center"}


def test_dates_after_tomorrow_are_counted_not_aggregated(tmp_path):
    """The latest plausible date is tomorrow (local date): tomorrow is placed, the day after is counted as
    implausible, left out of day/week/month windows and kept only in window=all."""
    for _ in range(2):  # a run that crosses midnight would move "tomorrow": run again
        today = dt.date.today()
        tomorrow, after = today + dt.timedelta(days=1), today + dt.timedelta(days=2)
        dates = [today.isoformat(), tomorrow.isoformat(), f"{tomorrow.month}/{tomorrow.day}/{tomorrow.year}",
                 after.isoformat(), f"{after.month}/{after.day}/{after.year % 100:02d}", "2999-01-01"]
        biases = [0.1, 0.3, 0.5, -0.4, -0.6, -0.8]
        rows = [score_row(f"f{i}", "F", d, 0.4 - b / 2, 0.4 + b / 2) for i, (d, b) in enumerate(zip(dates, biases))]
        scores = write_scores(tmp_path / "s", rows)
        summary, out = run(tmp_path, scores, window="day")
        summary_all, out_all = run(tmp_path, scores, window="all")
        if dt.date.today() == today:
            break
    got = {r["window_start"]: r for r in out}
    assert sorted(got) == [today, tomorrow]
    assert got[today]["n_articles"] == 1 and got[today]["mean_bias_score"] == pytest.approx(0.1, abs=1e-6)
    assert got[tomorrow]["n_articles"] == 2 and got[tomorrow]["mean_bias_score"] == pytest.approx(0.4, abs=1e-6)
    assert summary.aggregated_articles == 3
    assert summary.unplaceable_dates == {"implausible": 3} and summary.excluded_rows == {"unplaceable date": 3}
    assert set(summary.unplaceable_examples) == {dates[3], dates[4], "2999-01-01"}
    # window=all has no window to place: every row is in it, the unplaceable ones still counted
    assert out_all[0]["n_articles"] == 6 and summary_all.excluded_rows == {}
    assert out_all[0]["mean_bias_score"] == pytest.approx(sum(biases) / 6, abs=1e-6)
    assert summary_all.unplaceable_dates == {"implausible": 3}
    assert (out_all[0]["window_start"], out_all[0]["window_end"]) == (today, tomorrow)  # from placed dates only
    # the same boundary for a date-typed column
    typed = pa.Table.from_pylist([dict(r, date=d) for r, d in zip(rows, [today, tomorrow, tomorrow, after, after,
                                                                         dt.date(2999, 1, 1)])])
    (tmp_path / "typed" / "scores").mkdir(parents=True)
    pq.write_table(typed, tmp_path / "typed" / "scores" / "part-0.parquet")
    summary_typed, out_typed = run(tmp_path, tmp_path / "typed", window="day")
    if dt.date.today() == today:
        assert {r["window_start"]: r["n_articles"] for r in out_typed} == {today: 1, tomorrow: 2}
        assert summary_typed.unplaceable_dates == {"implausible": 3}


def test_real_dates_every_row_accounted_for(tmp_path, articles_path):
    """All 36k real dates: placed in a month or counted by reason; the missing count matches the file."""
    table = pq.read_table(articles_path, columns=["id", "source", "date", "url", "source_url"])
    rng = np.random.default_rng(0)
    p_left = rng.uniform(0, 0.5, table.num_rows)
    rows = [score_row(i, s, d, pl_, 0.3, url=u, source_url=su) for i, s, d, u, su, pl_ in
            zip(*[table[c].to_pylist() for c in ("id", "source", "date", "url", "source_url")], p_left)]
    summary, out = run(tmp_path, write_scores(tmp_path / "s", rows), window="month", outlet_key="domain")
    empty = sum(1 for d in table["date"].to_pylist() if d is None or not d.strip())
    assert summary.unplaceable_dates["missing"] == empty
    assert sum(r["n_articles"] for r in out) + sum(summary.unplaceable_dates.values()) == table.num_rows
    assert summary.unplaceable_dates.get("implausible", 0) >= 1  # 0001-11-30 is in the data
    assert summary.domain_fallback_rows == 0 and "cnn.com" in {r["outlet"] for r in out}


def means(rows: list[dict]) -> dict[tuple[str, dt.date], float]:
    return {(r["outlet"], r["window_start"]): r["mean_bias_score"] for r in rows}


def test_rerun_replaces_and_latest_model_wins(tmp_path):
    scores = write_scores(tmp_path / "s", HAND)
    _, rows1 = run(tmp_path, scores, window="month")
    _, rows2 = run(tmp_path, scores, window="month")
    files = sorted(p.name for p in (tmp_path / "agg" / "window=month").iterdir())
    assert files == ["_summary.json", "part-0.parquet"]
    assert rows1 == [dict(r, aggregated_at=r1["aggregated_at"]) for r, r1 in zip(rows2, rows1)]
    # a newer model (later scored_at) with other scores, and a rescoring of a1, a2 by m1 in a second file
    newer = [score_row("a1", "A", "2020-01-06", 0.3, 0.5, model="m2", scored_at="2026-02-01T00:00:00+00:00"),  # +0.2
             score_row("a2", "A", "2020-01-08", 0.2, 0.6, model="m2", scored_at="2026-02-01T00:00:00+00:00"),  # +0.4
             score_row("a3", "A", "2020-02-03", 0.6, 0.1, model="m2", scored_at="2026-02-01T00:00:00+00:00"),  # -0.5
             score_row("b1", "B", "2020-01-31", 0.5, 0.2, model="m2", scored_at="2026-02-01T00:00:00+00:00")]  # -0.3
    rescored = [dict(r, run_id="r2", bias_score=0.0) for r in HAND[:2]]
    write_scores(scores, newer + rescored, part="part-1")
    summary, rows_m2 = run(tmp_path, scores, window="month")
    assert summary.model_id == "m2" and summary.model_ids_found == ["m2", "m1"] and summary.notes
    assert {r["model_id"] for r in rows_m2} == {"m2"}
    assert means(rows_m2) == pytest.approx({("A", dt.date(2020, 1, 1)): (0.2 + 0.4) / 2,
                                            ("A", dt.date(2020, 2, 1)): -0.5, ("B", dt.date(2020, 1, 1)): -0.3},
                                           abs=1e-6)
    # m1 chosen by hand: the rescored rows (part-1) tie with part-0's on scored_at; part-0 sorts first and wins
    picked, rows_m1 = run(tmp_path, scores, window="month", model_id="m1")
    assert picked.duplicate_rows == 2 and sum(r["n_articles"] for r in rows_m1) == 4
    assert means(rows_m1) == pytest.approx({("A", dt.date(2020, 1, 1)): (-0.6 + 0.4) / 2,
                                            ("A", dt.date(2020, 2, 1)): 0.0, ("B", dt.date(2020, 1, 1)): 0.7},
                                           abs=1e-6)
    with pytest.raises(UserError, match="not in the scores"):
        run(tmp_path, scores, model_id="nope")


@pytest.mark.parametrize("rescored_at", ["2026-01-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00"])
def test_duplicate_id_keeps_the_row_of_the_path_that_sorts_first(tmp_path, rescored_at):
    """One model, one article id in two files: the row of the input path that sorts first survives,
    whether the other row ties with it on scored_at or was scored later (scored_at picks models, not rows)."""
    rescored = [score_row("a1", "A", "2020-01-06", 0.1, 0.3, scored_at=rescored_at, run="r2"),   # +0.2, was -0.6
                score_row("a2", "A", "2020-01-08", 0.2, 0.4, scored_at=rescored_at, run="r2")]   # +0.2, was +0.4
    # the first scoring in part-b, the rescoring (written later) in part-a: part-a sorts first
    scores = write_scores(tmp_path / "s", HAND, part="part-b")
    write_scores(scores, rescored, part="part-a")
    summary, rows = run(tmp_path, scores, window="all")
    got = {r["outlet"]: r for r in rows}
    assert summary.duplicate_rows == 2 and summary.aggregated_articles == 4 and summary.conflicting_ids == 0
    assert got["A"]["n_articles"] == 3
    assert got["A"]["mean_bias_score"] == pytest.approx((0.2 + 0.2 + 0.0) / 3, abs=1e-6)
    assert got["A"]["share_right"] == 0.0 and got["A"]["share_center"] == 1.0  # a1, a2 rescored as center
    assert got["B"]["mean_bias_score"] == pytest.approx(0.7, abs=1e-6)
    # the same rows with the file names swapped: the first scoring sorts first and is kept
    swapped = write_scores(tmp_path / "t", HAND, part="part-a")
    write_scores(swapped, rescored, part="part-b")
    _, rows = run(tmp_path, swapped, window="all")
    got = {r["outlet"]: r for r in rows}
    assert got["A"]["mean_bias_score"] == pytest.approx((-0.6 + 0.4 + 0.0) / 3, abs=1e-6)
    assert got["A"]["share_left"] == pytest.approx(1 / 3) and got["A"]["share_right"] == pytest.approx(1 / 3)


def test_models_tied_on_scored_at_the_model_id_that_sorts_first_wins(tmp_path):
    """Models whose latest scored_at are equal: the model id that sorts first is aggregated, wherever its
    rows lie in the files (here after the other models' rows, in one file)."""
    at = "2026-01-05T00:00:00+00:00"
    zeta = [score_row(r["id"], r["source"], r["date"], 0.1, 0.1, model="zeta", scored_at=at) for r in HAND]
    m1 = [score_row(r["id"], r["source"], r["date"], 0.1, 0.7, model="m1", scored_at=at) for r in HAND]
    alpha = [score_row(r["id"], r["source"], r["date"], 0.5, 0.3, model="alpha", scored_at=at) for r in HAND]
    one_file = tmp_path / "s" / "scores"
    one_file.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(zeta + m1 + alpha), one_file / "part-0.parquet")
    summary, rows = run(tmp_path, tmp_path / "s", window="all")
    assert summary.model_id == "alpha" and summary.model_ids_found == ["alpha", "m1", "zeta"]
    assert {r["outlet"]: r["mean_bias_score"] for r in rows} == pytest.approx({"A": -0.2, "B": -0.2}, abs=1e-6)
    # one of them scored a second later: the later one wins, whatever its name
    later = [dict(r, scored_at="2026-01-05T00:00:01+00:00") for r in zeta[:1]]
    pq.write_table(pa.Table.from_pylist(later), one_file / "part-1.parquet")
    summary, rows = run(tmp_path, tmp_path / "s", window="all")
    assert summary.model_id == "zeta" and summary.model_ids_found == ["zeta", "alpha", "m1"]
    assert {r["outlet"]: r["mean_bias_score"] for r in rows} == pytest.approx({"A": 0.0, "B": 0.0}, abs=1e-6)


def test_bad_input_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="since"):
        AggregateConfig(scores="x", output="y", since="9/6/17")
    with pytest.raises(UserError, match="not found"):
        run(tmp_path, tmp_path / "missing")
    bad = tmp_path / "bad" / "scores"
    bad.mkdir(parents=True)
    pq.write_table(pa.table({"id": ["1"], "source": ["A"]}), bad / "part-0.parquet")
    with pytest.raises(UserError, match="lack column"):
        run(tmp_path, tmp_path / "bad")
    no_url = [dict(r, url=None, source_url=None) for r in HAND]
    pq.write_table(pa.Table.from_pylist(no_url).drop_columns(["url", "source_url"]), bad / "part-0.parquet")
    with pytest.raises(UserError, match="--outlet-key domain needs"):
        run(tmp_path, tmp_path / "bad", outlet_key="domain")


@pytest.mark.slow
def test_cli_runs_without_torch(tmp_path):
    scores = write_scores(tmp_path / "s", HAND)
    code = ("import sys; from allsides_batch.__main__ import main; sys.argv[1:] = sys.argv[1:]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert 'torch' not in sys.modules, 'torch imported'\n"
            "    raise\n")
    ok = subprocess.run([sys.executable, "-c", code, "aggregate", "--scores", str(scores), "--output",
                         str(tmp_path / "cli"), "--window", "month"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["rows"] == 3
    bad = subprocess.run([sys.executable, "-m", "allsides_batch", "aggregate", "--scores", str(tmp_path / "nope"),
                          "--output", str(tmp_path / "cli")], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error:")


# ------------------------------------------------------------------------------------ seen in training

def test_outlets_the_model_trained_on_are_marked_seen(tmp_path):
    rows = [score_row("a1", "Known", "2026-01-01", 0.7, 0.1, url="https://www.known.com/x"),
            score_row("a2", "Known", "2026-01-02", 0.6, 0.2, url="https://known.com/y"),
            score_row("b1", "Renamed", "2026-01-01", 0.2, 0.6, url="https://edition.known.com/z"),  # same domain
            score_row("c1", "Fresh", "2026-01-01", 0.1, 0.8, url="https://fresh.org/a"),
            score_row("d1", "NoUrl", "2026-01-01", 0.3, 0.3)]
    scores = write_scores(tmp_path / "out", rows)
    model = model_with_outlets(tmp_path, {"Known": 40}, {"known.com": 40})
    summary, table = run(tmp_path, scores, model=str(model))
    by = {r["outlet"]: r for r in table}
    assert (by["Known"]["seen_in_training"], by["Known"]["domain_seen_in_training"]) == (True, True)
    assert (by["Renamed"]["seen_in_training"], by["Renamed"]["domain_seen_in_training"]) == (False, True)
    assert (by["Fresh"]["seen_in_training"], by["Fresh"]["domain_seen_in_training"]) == (False, False)
    assert (by["NoUrl"]["seen_in_training"], by["NoUrl"]["domain_seen_in_training"]) == (False, None)
    assert summary.outlets_seen_in_training == 2 and summary.articles_from_seen_outlets == 3
    assert any("2 of 4 outlet(s) (3 of 5 articles) are ones the model was trained on" in n for n in summary.notes)
    # keyed by domain: the alias merges into known.com, seen by source name too
    _, table = run(tmp_path / "d", scores, model=str(model), outlet_key="domain")
    by = {r["outlet"]: r for r in table}
    assert by["known.com"]["n_articles"] == 3 and by["known.com"]["seen_in_training"] is True
    assert by["fresh.org"]["domain_seen_in_training"] is False


def test_without_a_model_or_its_outlets_file_seen_is_null_with_a_note(tmp_path):
    scores = write_scores(tmp_path / "out", [score_row("a1", "Known", "2026-01-01", 0.7, 0.1)])
    summary, table = run(tmp_path, scores)
    assert table[0]["seen_in_training"] is None and table[0]["domain_seen_in_training"] is None
    assert summary.outlets_seen_in_training is None
    assert sum("no --model given" in n for n in summary.notes) == 1
    old = tmp_path / "old-model"
    old.mkdir()
    summary, table = run(tmp_path / "o", scores, model=str(old))
    assert table[0]["seen_in_training"] is None
    assert sum("has no training_outlets.json" in n for n in summary.notes) == 1
    (old / "training_outlets.json").write_text("{not json")
    with pytest.raises(UserError, match="training_outlets.json is damaged"):
        run(tmp_path / "p", scores, model=str(old))
