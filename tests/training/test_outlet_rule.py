"""The outlet rule (training/outlet_rule.py): thresholds fitted on out-of-fold outlet means, split-conformal
label sets that widen for small outlets, the files `train` writes, and `aggregate` applying them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from allsides_batch.training.outlet_rule import (
    FIXED,
    OutletRule,
    Outlets,
    distance,
    fit_rule,
    fit_thresholds,
    label_of,
    outlets_of,
    rule_report,
)


def test_thresholds_maximise_outlet_accuracy_by_hand():
    # means squeezed near 0, as for unseen outlets: the fixed ±1/3 rule calls all of them center
    mean = np.array([-0.30, -0.20, -0.12, -0.05, 0.00, 0.04, 0.10, 0.18, 0.26])
    label = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    lo, hi = fit_thresholds(mean, label)
    assert lo == pytest.approx((-0.12 - 0.05) / 2) and hi == pytest.approx((0.04 + 0.10) / 2)
    assert (label_of(mean, (lo, hi)) == label).all()
    assert (label_of(mean, FIXED) == 1).all()
    # one misplaced outlet: still the best pair, 8 of 9 right
    label2 = label.copy()
    label2[4] = 2
    assert (label_of(mean, fit_thresholds(mean, label2)) == label2).sum() == 8


def test_distance_to_each_labels_interval():
    t = (-0.1, 0.1)
    assert distance(np.array([-0.3, 0.0, 0.3]), 0, t).tolist() == pytest.approx([0.0, 0.1, 0.4])
    assert distance(np.array([-0.3, 0.0, 0.3]), 1, t).tolist() == pytest.approx([0.2, 0.0, 0.2])
    assert distance(np.array([-0.3, 0.0, 0.3]), 2, t).tolist() == pytest.approx([0.4, 0.1, 0.0])


def test_sets_hold_the_label_and_widen_for_small_outlets():
    rule = OutletRule(thresholds=(-0.1, 0.1), tau2=0.01, within_var=0.3, calibration=list(np.linspace(0, 0.5, 99)),
                      min_articles=20)
    # quantile: the ceil(100 * 0.9) = 90th smallest of 99
    assert rule.quantile(0.9) == pytest.approx(np.linspace(0, 0.5, 99)[89])
    assert rule.quantile(0.995) == math.inf
    sets = rule.sets(np.array([-0.2, -0.2, 0.0]), np.array([3000, 3, 50]), 0.9)
    assert sets[0] == ["left"]                       # a large outlet far from the cut: one label
    assert sets[1][0] == "left" and len(sets[1]) > 1  # the same mean from 3 articles: more labels
    assert "center" in sets[2]
    assert all(s == [lab for lab in ("left", "center", "right") if lab in s] for s in sets)  # in label order


def _synthetic_outlets(rng, k: int) -> Outlets:
    """k outlets whose mean sits near its label's centre (−0.15 / 0 / +0.15) with noise, n from 1 to 2,000."""
    label = rng.integers(0, 3, k)
    n = np.exp(rng.uniform(0, np.log(2000), k)).astype(int).clip(1)
    mean = (label - 1) * 0.15 + rng.normal(0, 0.06, k) + rng.normal(0, 0.3, k) / np.sqrt(n)
    return Outlets(names=[f"o{i}" for i in range(k)], n=n, mean=mean, var=np.full(k, 0.09), label=label)


def test_conformal_coverage_holds_on_fresh_outlets():
    rng = np.random.default_rng(0)
    rule = fit_rule(_synthetic_outlets(rng, 400), min_articles=20)
    report = rule_report(_synthetic_outlets(rng, 4000), rule, level=0.9)
    assert 0.87 <= report["coverage"] <= 0.95
    assert report["accuracy_fitted"] > report["accuracy_fixed"]
    small, large = report["by_size"]["1-4"], report["by_size"]["100+"]
    assert small["set_size"] > large["set_size"]


def test_outlets_of_groups_articles():
    out = outlets_of(["b", "a", "b", "b"], np.array([2, 0, 2, 1]), np.array([0.2, -0.5, 0.4, 0.0]))
    assert out.names == ["a", "b"] and out.n.tolist() == [1, 3] and out.label.tolist() == [0, 2]
    assert out.mean.tolist() == pytest.approx([-0.5, 0.2]) and math.isnan(out.var[0])
    assert out.var[1] == pytest.approx(0.04)


# ---------------------------------------------------------------------------- train → files → aggregate

@pytest.fixture(scope="module")
def trained(articles_sample, tmp_path_factory) -> Path:
    from allsides_batch.config import TrainConfig
    from allsides_batch.training.train import train_model

    out = tmp_path_factory.mktemp("rule") / "linear"
    train_model(TrainConfig(kind="linear", data=[str(articles_sample)], output=str(out), progress=False))
    return out


def test_train_writes_the_rule_and_out_of_fold_scores(trained, articles_sample):
    rule = json.loads((trained / "outlet_rule.json").read_text())
    lo, hi = rule["thresholds"]
    assert lo <= hi and rule["folds"] == 5 and rule["group_by"] == "source"
    assert rule["calibration_distances"] == sorted(rule["calibration_distances"])
    assert len(rule["calibration_distances"]) == rule["outlets"]
    oof = pq.read_table(trained / "oof_scores.parquet")
    sample = pq.read_table(articles_sample)
    assert oof.num_rows == rule["articles"] == sample.num_rows
    # every outlet sits in one fold: scored by a model that never saw it
    folds = {}
    for source, fold in zip(oof["source"].to_pylist(), oof["fold"].to_pylist()):
        folds.setdefault(source, set()).add(fold)
    assert all(len(f) == 1 for f in folds.values()) and len({f for s in folds.values() for f in s}) == 5
    assert not any(name.endswith(".pkl") or name.endswith(".pickle") for name in map(str, trained.iterdir()))


def test_aggregate_applies_the_fitted_rule_and_keeps_the_fixed_one_by_flag(trained, tmp_path):
    from score_rows import score_row, write_scores

    from allsides_batch.analysis.aggregate import outlet_aggregates
    from allsides_batch.config import AggregateConfig

    rule = OutletRule.from_json(json.loads((trained / "outlet_rule.json").read_text()))
    lo, hi = rule.thresholds
    below, between = lo - 0.01, (lo + hi) / 2
    rows = ([score_row(f"a{i}", "Small", "2026-01-01", 0.5 - below / 2, 0.5 + below / 2 - 1e-9) for i in range(2)]
            + [score_row(f"b{i}", "Big", "2026-01-01", 0.45 - between / 2, 0.45 + between / 2) for i in range(300)])
    scores = write_scores(tmp_path / "out", rows)

    def agg(name, **kw):
        summary = outlet_aggregates(AggregateConfig(scores=str(scores), output=str(tmp_path / name), **kw))
        return summary, {r["outlet"]: r for r in pq.read_table(summary.output_path).to_pylist()}

    summary, fitted = agg("fitted", model=str(trained))
    from allsides_batch.analysis.report import label_bands

    assert summary.label_rule == "fitted" and summary.label_thresholds == pytest.approx(list(rule.thresholds))
    assert label_bands(str(tmp_path / "fitted"), "all") == pytest.approx(rule.thresholds)  # the chart's bands
    assert fitted["Small"]["outlet_label"] == "left" and fitted["Big"]["outlet_label"] == "center"
    assert "center" in fitted["Big"]["label_set"]
    assert "left" in fitted["Small"]["label_set"]
    assert len(fitted["Small"]["label_set"]) >= len(fitted["Big"]["label_set"])
    expected = rule.sets(np.array([fitted["Big"]["mean_bias_score"]]), np.array([300]), 0.9)[0]
    assert fitted["Big"]["label_set"] == expected
    summary, fixed = agg("fixed", model=str(trained), label_rule="fixed")
    assert summary.label_rule == "fixed"
    assert label_bands(str(tmp_path / "fixed"), "all") == pytest.approx((-1 / 3, 1 / 3))
    assert fixed["Small"]["outlet_label"] == ("left" if below < -1 / 3 else "center")
    assert fixed["Big"]["label_set"] is None
    _, wider = agg("wider", model=str(trained), set_level=0.99)
    assert len(wider["Big"]["label_set"]) >= len(fitted["Big"]["label_set"])
    # a model directory without the rule: the fixed rule, one note
    summary, old = agg("old", model=str(tmp_path))
    assert old["Big"]["label_set"] is None and old["Big"]["seen_in_training"] is None
    mentions = [n for n in summary.notes if "training_outlets.json" in n or "outlet_rule.json" in n]
    assert len(mentions) == 1 and "has no training_outlets.json or outlet_rule.json" in mentions[0]


def test_report_draws_how_the_model_places_outlets_it_never_saw(trained, tmp_path):
    """report --model: unseen.png and unseen.md from the model's out-of-fold scores, their figures computed
    from those scores (checked here by hand from the Parquet file)."""
    from collections import defaultdict

    from score_rows import score_row, write_scores

    from allsides_batch.analysis.aggregate import outlet_aggregates
    from allsides_batch.analysis.report import write_report
    from allsides_batch.config import AggregateConfig
    from allsides_batch.metrics import spearman

    scores = write_scores(tmp_path / "out", [score_row("a1", "X", "2026-01-01", 0.2, 0.5)])
    outlet_aggregates(AggregateConfig(scores=str(scores), output=str(tmp_path / "agg"), model=str(trained)))
    paths = write_report(str(tmp_path / "agg"), str(tmp_path / "report"), model_dir=str(trained))
    assert Path(paths.unseen_chart).stat().st_size > 10_000 and Path(paths.unseen_table).exists()
    oof = pq.read_table(trained / "oof_scores.parquet").to_pylist()
    by = defaultdict(list)
    for r in oof:
        by[r["source"]].append(r)
    rank = {"left": 0, "center": 1, "right": 2}
    big = {s: rows for s, rows in by.items() if len(rows) >= 20}
    means = [np.mean([r["bias_score"] for r in rows]) for rows in big.values()]
    truth = [rank[max(("left", "center", "right"), key=[r["label"] for r in rows].count)] for rows in big.values()]
    stats = paths.unseen
    assert stats["outlets"] == len(big) and stats["all_outlets"] == len(by)
    if len(big) >= 2:
        assert stats["spearman"] == pytest.approx(spearman(means, truth))
    table = Path(paths.unseen_table).read_text()
    assert f"cover {stats['coverage']:.3f} of all {len(by)} outlets" in table
    assert table.count("\n| ") == len(by) + 2  # header, rule, one row per outlet
    # a model without out-of-fold scores: a note, no picture
    paths = write_report(str(tmp_path / "agg"), str(tmp_path / "r2"), model_dir=str(tmp_path))
    assert paths.unseen_chart is None and any("no oof_scores.parquet" in n for n in paths.notes)
