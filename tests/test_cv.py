"""Outlet-grouped cross-validation: folds share no outlet, summaries, and `cv` end to end on the tiny model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from allsides_batch.training.cv import markdown_table, random_folds, summarise
from allsides_batch.training.data import load_labelled, outlet_folds


@pytest.fixture(scope="module")
def sample(articles_sample):
    return load_labelled([str(articles_sample)])


def test_folds_share_no_outlet_and_are_stratified(sample):
    folds = outlet_folds(sample.sources, sample.labels, 3, seed=7)
    outlets = [set(np.asarray(sample.sources)[folds == f]) for f in range(3)]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not outlets[a] & outlets[b]
    for f in range(3):  # 20 outlets per label in the sample: every fold holds each label
        assert set(sample.labels[folds == f].tolist()) == {0, 1, 2}
    assert np.array_equal(folds, outlet_folds(sample.sources, sample.labels, 3, seed=7))


def test_random_folds_mix_outlets(sample):
    folds = random_folds(sample.labels, 3, seed=1)
    assert np.bincount(folds).min() >= len(folds) // 3 - 3
    shared = set(np.asarray(sample.sources)[folds == 0]) & set(np.asarray(sample.sources)[folds == 1])
    assert shared


def test_summary_mean_and_sd_skip_nan():
    folds = [{"macro_f1": 0.5, "accuracy": 0.6, "ece": 0.1, "ece_uncalibrated": 0.2, "spearman": float("nan"),
              "outlet_accuracy": 0.5},
             {"macro_f1": 0.7, "accuracy": 0.8, "ece": 0.3, "ece_uncalibrated": 0.2, "spearman": 0.4,
              "outlet_accuracy": 0.5}]
    s = summarise(folds)
    assert s["macro_f1"]["mean"] == pytest.approx(0.6) and s["macro_f1"]["sd"] == pytest.approx(math.sqrt(0.02))
    assert s["spearman"] == {"mean": 0.4, "sd": s["spearman"]["sd"], "n": 1} and math.isnan(s["spearman"]["sd"])


def test_cv_command_end_to_end(tiny_model_dir, articles_sample, tmp_path):
    from allsides_batch.__main__ import app

    out = tmp_path / "cv"
    result = CliRunner().invoke(app, [
        "cv", "--data", str(articles_sample), "--folds", "3", "--kind", "transformer", "--base-model", tiny_model_dir,
        "--epochs", "1",
        "--max-length", "32", "--val-fraction", "0.2", "--device", "cpu", "--output", str(out),
        "--max-train-samples", "150", "--adversary-weight", "0.3"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "cv.json").read_text())
    assert report["folds"] == 3 and len(report["per_fold"]) == 3
    for fold in report["per_fold"]:
        assert 0.0 <= fold["macro_f1"] <= 1.0 and 0.0 <= fold["ece"] <= 1.0
        assert fold["test_outlets"] >= 15 and fold["temperature"] > 0
    assert sum(f["n_test"] for f in report["per_fold"]) == 600  # every article tested exactly once
    assert report["config"]["adversary_weight"] == 0.3
    md = (out / "cv.md").read_text()
    assert "mean ± sd" in md and md == "# 3-fold outlet-grouped cross-validation\n\n" + markdown_table(
        report["per_fold"], report["summary"])
    printed = json.loads(result.stdout)  # one JSON result on stdout; the markdown is cv.md (or --markdown: stderr)
    assert printed["folds"] == 3 and printed["written"]["markdown"] == str(out / "cv.md")
    assert printed["summary"]["macro_f1"]["mean"] == round(report["summary"]["macro_f1"]["mean"], 4)
    assert "mean ± sd" not in result.stdout


def test_cv_refuses_bad_input(articles_sample):
    from allsides_batch.__main__ import app

    result = CliRunner().invoke(app, ["cv", "--data", str(articles_sample), "--folds", "1"])
    assert result.exit_code == 2 and "at least 2 folds" in result.output
    result = CliRunner().invoke(app, ["cv", "--data", str(articles_sample), "--folds", "2", "--split", "column:x"])
    assert result.exit_code == 2 and "cv makes its own folds" in result.output


def test_cv_of_the_linear_model_in_parallel_folds_equals_sequential(articles_sample, tmp_path):
    """`cv --kind linear --jobs 2`: folds in worker processes give exactly the sequential numbers."""
    from allsides_batch.config import TrainConfig
    from allsides_batch.training.cv import cross_validate

    cfg = TrainConfig(kind="linear", data=[str(articles_sample)], linear_min_df=1, val_fraction=0.2)
    one = cross_validate(cfg, folds=3)
    two = cross_validate(cfg, folds=3, jobs=2)
    assert [f["macro_f1"] for f in one.folds] == [f["macro_f1"] for f in two.folds]
    assert sum(f["n_test"] for f in one.folds) == 600
    from allsides_batch.__main__ import app

    result = CliRunner().invoke(app, ["cv", "--data", str(articles_sample), "--folds", "3", "--linear-min-df", "1",
                                      "--val-fraction", "0.2", "--group-by", "domain",
                                      "--output", str(tmp_path / "cv")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert report["config"]["kind"] == "linear" and report["config"]["group_by"] == "domain"
