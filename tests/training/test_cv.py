"""Outlet-grouped cross-validation: folds share no outlet, summaries, and `cv` end to end on the tiny model."""

from __future__ import annotations

import json
import math
import re
import statistics

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


NAN = float("nan")


def fold_row(fold, n_test, outlets, f1, acc, ece, ece_raw, rho, temperature) -> dict:
    return {"fold": fold, "n_test": n_test, "test_outlets": outlets, "macro_f1": f1, "accuracy": acc, "ece": ece,
            "ece_uncalibrated": ece_raw, "spearman": rho, "outlet_accuracy": 0.5, "temperature": temperature}


def test_cv_markdown_from_known_folds():
    """summarise + markdown_table on known per-fold numbers, against a table written out by hand:
    macro-F1 0.5/0.6/0.7: 0.600 ± 0.100; accuracy 0.6/0.7/0.9: mean 0.7333, sd √(0.04667/2) = 0.1528;
    ECE 0.1/0.05/0.06: 0.070, sd √(0.0014/2) = 0.0265; uncalibrated 0.2/0.25/0.15: 0.200 ± 0.050;
    Spearman NaN/0.4/0.8: the NaN fold skipped, 0.600 ± √0.08 = 0.283."""
    folds = [fold_row(0, 200, 20, 0.5, 0.6, 0.1, 0.2, NAN, 1.234),
             fold_row(1, 190, 21, 0.6, 0.7, 0.05, 0.25, 0.4, 1.5),
             fold_row(2, 210, 19, 0.7, 0.9, 0.06, 0.15, 0.8, 0.987)]
    assert markdown_table(folds, summarise(folds)) == (
        "| fold | test articles / outlets | macro-F1 | accuracy | ECE (uncalibrated) | Spearman | T |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n"
        "| 0 | 200 / 20 | 0.500 | 0.600 | 0.100 (0.200) | nan | 1.23 |\n"
        "| 1 | 190 / 21 | 0.600 | 0.700 | 0.050 (0.250) | 0.400 | 1.50 |\n"
        "| 2 | 210 / 19 | 0.700 | 0.900 | 0.060 (0.150) | 0.800 | 0.99 |\n"
        "| mean ± sd | | 0.600 ± 0.100 | 0.733 ± 0.153 | 0.070 ± 0.026 (0.200 ± 0.050) | 0.600 ± 0.283 | |\n")
    # one fold with a Spearman: its value without an sd; none: n/a
    two = [fold_row(0, 300, 30, 0.25, 0.5, 0.2, 0.3, NAN, 1.0), fold_row(1, 300, 30, 0.75, 0.5, 0.1, 0.3, 0.125, 2.0)]
    assert markdown_table(two, summarise(two)).splitlines()[-1] == (
        "| mean ± sd | | 0.500 ± 0.354 | 0.500 ± 0.000 | 0.150 ± 0.071 (0.300 ± 0.000) | 0.125 | |")
    none = [dict(f, spearman=NAN) for f in two]
    assert markdown_table(none, summarise(none)).splitlines()[-1].endswith("| n/a | |")


def expected_cv_md(per_fold: list[dict]) -> str:
    """cv.md rebuilt from the per-fold numbers alone: mean and sample sd (statistics) over the folds with a
    value, 3 decimals (T: 2); the sd left out for one value, n/a for none."""
    def cell(name):
        values = [f[name] for f in per_fold if not math.isnan(f[name])]
        if not values:
            return "n/a"
        if len(values) == 1:
            return f"{values[0]:.3f}"
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"

    lines = [f"# {len(per_fold)}-fold outlet-grouped cross-validation", "",
             "| fold | test articles / outlets | macro-F1 | accuracy | ECE (uncalibrated) | Spearman | T |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {f['fold']} | {f['n_test']} / {f['test_outlets']} | {f['macro_f1']:.3f} | {f['accuracy']:.3f} | "
              f"{f['ece']:.3f} ({f['ece_uncalibrated']:.3f}) | {f['spearman']:.3f} | {f['temperature']:.2f} |"
              for f in per_fold]
    lines.append(f"| mean ± sd | | {cell('macro_f1')} | {cell('accuracy')} | {cell('ece')} "
                 f"({cell('ece_uncalibrated')}) | {cell('spearman')} | |")
    return "\n".join(lines) + "\n"


@pytest.mark.slow
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
    assert [f["fold"] for f in report["per_fold"]] == [0, 1, 2]
    for name in ("macro_f1", "accuracy", "ece", "ece_uncalibrated", "spearman"):
        values = [f[name] for f in report["per_fold"] if not math.isnan(f[name])]
        got = report["summary"][name]
        assert got["n"] == len(values)
        if len(values) >= 2:
            assert got["mean"] == pytest.approx(statistics.mean(values), abs=1e-12)
            assert got["sd"] == pytest.approx(statistics.stdev(values), abs=1e-12)
    md = (out / "cv.md").read_text()
    assert md == expected_cv_md(report["per_fold"])
    assert re.search(r"^\| mean ± sd \| \| \d\.\d{3} ± \d\.\d{3} \| \d\.\d{3} ± \d\.\d{3} \|", md, re.M)
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


@pytest.mark.slow
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
    assert (tmp_path / "cv" / "cv.md").read_text() == expected_cv_md(report["per_fold"])
