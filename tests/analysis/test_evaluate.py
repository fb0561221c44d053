"""evaluate: metrics equal scikit-learn's; labels join by id (rescored, unscored, unlabelled rows
counted); --split picks train's validation rows; --model scores through the production scorer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)

from allsides_batch.analysis.evaluate import evaluate_scores, markdown_report, select_labelled, write_evaluation
from allsides_batch.config import EvaluateConfig, ScoreConfig
from allsides_batch.errors import ConfigError, UserError
from allsides_batch.training.data import load_labelled, make_split

LABELS = ["left", "center", "right"]


def fake_scores(root: Path, ids, labels, seed=0, model="m1", scored_at="2026-01-01T00:00:00Z") -> np.ndarray:
    """Score-shaped Parquet with probabilities that lean (noisily) toward the true label."""
    rng = np.random.default_rng(seed)
    alpha = np.ones((len(ids), 3))
    alpha[np.arange(len(ids)), labels] += 1.5
    probs = np.array([rng.dirichlet(a) for a in alpha])
    out = root / "scores" / f"model_id={model}"
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "id": list(ids), "source": ["x"] * len(ids), "date": ["2020-01-01"] * len(ids),
        "label": [LABELS[i] for i in probs.argmax(1)],
        **{f"p_{name}": probs[:, i].astype(np.float32) for i, name in enumerate(LABELS)},
        "bias_score": (probs[:, 2] - probs[:, 0]).astype(np.float32), "confidence": probs.max(1).astype(np.float32),
        "model_id": [model] * len(ids), "scored_at": [scored_at] * len(ids)}), out / f"part-{seed}.parquet")
    return probs.astype(np.float32).astype(np.float64)


def hand_ece(probs, y, n_bins=15):
    conf, pred = probs.max(1), probs.argmax(1)
    total = 0.0
    for lo, hi in zip(np.linspace(0, 1, n_bins + 1)[:-1], np.linspace(0, 1, n_bins + 1)[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.sum() / len(y) * abs((pred[m] == y[m]).mean() - conf[m].mean())
    return total


@pytest.mark.slow
def test_metrics_equal_scikit_learn(tmp_path, unique_sample):
    data = load_labelled([str(unique_sample)], fingerprint=False)
    probs = fake_scores(tmp_path / "s", data.ids, data.labels)
    cfg = EvaluateConfig(data=[str(unique_sample)], min_articles=5)
    result = evaluate_scores(str(tmp_path / "s"), cfg)
    a, y, pred = result["articles"], data.labels, probs.argmax(1)
    n = len(y)
    assert result["evaluated"] == n and n > 500 and result["unscored"] == 0
    assert a["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert a["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=[0, 1, 2])
    for i, name in enumerate(LABELS):
        c = a["per_class"][name]
        assert (c["precision"], c["recall"], c["f1"], c["support"]) == pytest.approx(
            (precision[i], recall[i], f1[i], support[i]))
    assert a["confusion"] == confusion_matrix(y, pred, labels=[0, 1, 2]).tolist()
    assert a["log_loss"] == pytest.approx(log_loss(y, probs / probs.sum(1, keepdims=True), labels=[0, 1, 2]), rel=1e-4)
    assert a["ece"] == pytest.approx(hand_ece(probs, y))
    # outlet level: Spearman of per-outlet mean (p_right - p_left) against the outlet's label
    outlets = sorted(set(data.sources))
    means = [np.mean([probs[i, 2] - probs[i, 0] for i in range(n) if data.sources[i] == o]) for o in outlets]
    truth = [np.bincount([y[i] for i in range(n) if data.sources[i] == o], minlength=3).argmax() for o in outlets]
    o = result["outlets"]
    assert o["outlets"] == len(outlets) and o["spearman"] == pytest.approx(spearmanr(means, truth).statistic)
    by_threshold = [0 if m < -1 / 3 else 2 if m > 1 / 3 else 1 for m in means]
    assert o["label_accuracy"] == pytest.approx(accuracy_score(truth, by_threshold))
    md = markdown_report(result)
    assert f"| accuracy | {a['accuracy']:.3f} |" in md and md.count("\n| left |") == 2


@pytest.mark.slow
def test_join_counts_rescored_unscored_and_unlabelled(tmp_path, unique_sample):
    data = load_labelled([str(unique_sample)], fingerprint=False)
    first = fake_scores(tmp_path / "s", data.ids[:500], data.labels[:500], seed=1)
    # a later run scored the first 100 articles again into another file: each id counts once, from the file
    # whose path sorts first (part-1), whatever the scored_at (the rule `aggregate` applies)
    newer = fake_scores(tmp_path / "s", data.ids[:100], data.labels[:100], seed=2, scored_at="2026-02-01T00:00:00Z")
    fake_scores(tmp_path / "s", ["not-labelled-1", "not-labelled-2"], np.array([0, 1]), seed=3)
    q = tmp_path / "s" / "quarantine" / "model_id=m1"
    q.mkdir(parents=True)
    pq.write_table(pa.table({"id": data.ids[500:520], "reason": ["empty text"] * 20}), q / "part-0.parquet")
    result = evaluate_scores(str(tmp_path / "s"), EvaluateConfig(data=[str(unique_sample)], min_articles=5))
    assert (result["evaluated"] == 500 and result["unscored"] == len(data.ids) - 500
            and result["scores_without_label"] == 2)
    assert result["unscored_reasons"] == {"empty text": 20} and result["notes"]
    first_100 = evaluate_scores(str(tmp_path / "s"), EvaluateConfig(data=[str(unique_sample)], split="all"),
                               labelled=_first(select_labelled(EvaluateConfig(data=[str(unique_sample)])), 100))
    assert first_100["articles"]["accuracy"] == pytest.approx(accuracy_score(data.labels[:100], first[:100].argmax(1)))
    assert accuracy_score(data.labels[:100], newer.argmax(1)) != first_100["articles"]["accuracy"]


def _first(labelled, n):
    labelled.ids, labelled.labels, labelled.sources = labelled.ids[:n], labelled.labels[:n], labelled.sources[:n]
    return labelled


@pytest.mark.slow
def test_split_selects_trains_validation_rows(unique_sample, articles_sample):
    data = load_labelled([str(unique_sample)], fingerprint=False)
    _, val = make_split(data, "outlet", 0.2, 7)
    chosen = select_labelled(EvaluateConfig(data=[str(unique_sample)], split="outlet", val_fraction=0.2, seed=7))
    assert chosen.ids == [data.ids[i] for i in val]
    _, val_domain = make_split(data, "outlet", 0.2, 7, group_by="domain")
    assert set(val_domain.tolist()) != set(val.tolist())  # the grouping changes the rows, so it must be passed on
    chosen = select_labelled(EvaluateConfig(data=[str(unique_sample)], split="outlet", val_fraction=0.2, seed=7,
                                            group_by="domain"))
    assert chosen.ids == [data.ids[i] for i in val_domain]
    media = select_labelled(EvaluateConfig(data=[str(unique_sample)], split="column:split_media=train"))
    raw = pq.read_table(unique_sample, columns=["split_media"])["split_media"].to_pylist()
    assert len(media.ids) == sum(v == "train" for v in raw) > 0
    with pytest.raises(UserError, match="no row has"):
        select_labelled(EvaluateConfig(data=[str(unique_sample)], split="column:split_media=nope"))
    with pytest.raises(UserError, match="duplicate ids"):
        select_labelled(EvaluateConfig(data=[str(articles_sample)]))  # it repeats a two-label outlet's rows
    with pytest.raises(ConfigError, match="split"):
        EvaluateConfig(data=["x"], split="outlets")


@pytest.mark.slow
def test_evaluate_model_scores_through_the_production_scorer(tmp_path, unique_sample, tiny_model_dir):
    """evaluate --model == score, then evaluate --scores: the same probabilities, the same metrics."""
    from allsides_batch.analysis.evaluate import evaluate_model
    from allsides_batch.scoring import score_corpus

    cfg = EvaluateConfig(data=[str(unique_sample)], split="outlet", val_fraction=0.1, min_articles=5)
    score_cfg = ScoreConfig(model=tiny_model_dir, max_length=64, device="cpu", progress=False)
    result = evaluate_model(score_cfg, cfg)
    chosen = select_labelled(cfg)
    assert result["evaluated"] == len(chosen.ids) == result["scoring"]["scored_rows"]
    subset = tmp_path / "subset.parquet"
    table = pq.read_table(unique_sample)
    pq.write_table(table.filter(pa.compute.is_in(table["id"], pa.array(chosen.ids))), subset)
    out = tmp_path / "scored"
    score_corpus(ScoreConfig(model=tiny_model_dir, input=[str(subset)], output=str(out), max_length=64,
                             device="cpu", progress=False))
    direct = evaluate_scores(str(out), cfg)
    assert direct["model_id"] == result["model_id"]
    assert direct["articles"]["confusion"] == result["articles"]["confusion"]
    assert direct["articles"]["log_loss"] == pytest.approx(result["articles"]["log_loss"], abs=1e-6)
    json_path, md_path = write_evaluation(result, str(tmp_path / "eval"))
    assert Path(json_path).is_file() and "macro-F1" in Path(md_path).read_text()


@pytest.mark.slow
def test_cli_scores_and_errors(tmp_path, unique_sample):
    data = load_labelled([str(unique_sample)], fingerprint=False)
    fake_scores(tmp_path / "s", data.ids, data.labels)
    run = [sys.executable, "-m", "allsides_batch", "evaluate", "--data", str(unique_sample)]
    ok = subprocess.run(run + ["--scores", str(tmp_path / "s"), "--output", str(tmp_path / "e"), "--min-articles", "5"],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    printed = json.loads(ok.stdout)  # one JSON result on stdout; the markdown tables are evaluation.md
    assert printed["articles"]["macro_f1"] == json.loads((tmp_path / "e" / "evaluation.json").read_text())[
        "articles"]["macro_f1"]
    assert "| macro-F1 |" in (tmp_path / "e" / "evaluation.md").read_text() and "| macro-F1 |" not in ok.stdout
    both = subprocess.run(run + ["--scores", str(tmp_path / "s"), "--model", "x"],
                          capture_output=True, text=True, check=False)
    assert both.returncode == 2 and "exactly one of --model" in both.stderr and both.stderr.count("\n") == 1


@pytest.mark.slow
def test_rows_the_model_trained_on_are_flagged_not_held_out(unique_sample, articles_path, tmp_path):
    """A linear model refit on train + validation (the default) has seen train's validation rows: evaluate says
    so (held_out false, a note naming the refit), for written scores (the model found through the score run)
    and for --model; --split all on its training file, or another seed's split, is flagged too; articles from
    a file it never trained on are held out. Files are compared by content, so a renamed copy still counts."""
    import shutil

    from allsides_batch.analysis.evaluate import evaluate_model
    from allsides_batch.config import TrainConfig
    from allsides_batch.scoring import score_corpus
    from allsides_batch.training.train import train_model

    model = tmp_path / "linear"
    train_model(TrainConfig(data=[str(unique_sample)], output=str(model), progress=False))
    copy = tmp_path / "renamed.parquet"
    shutil.copy(unique_sample, copy)
    score_corpus(ScoreConfig(model=str(model), input=[str(copy)], output=str(tmp_path / "scores"), progress=False))

    result = evaluate_scores(str(tmp_path / "scores"), EvaluateConfig(data=[str(copy)], split="outlet"))
    assert result["held_out"] is False and any("--linear-refit" in n for n in result["notes"]), result["notes"]
    result = evaluate_model(ScoreConfig(model=str(model), progress=False),
                            EvaluateConfig(data=[str(unique_sample)], split="all"))
    assert result["held_out"] is False and any("every row" in n for n in result["notes"])
    result = evaluate_model(ScoreConfig(model=str(model), progress=False),
                            EvaluateConfig(data=[str(unique_sample)], split="outlet", seed=7))
    assert result["held_out"] is False and any("not the model's validation split" in n for n in result["notes"])

    # articles of other outlets, in a file the model never saw: held out, no note
    trained_on = set(pq.read_table(unique_sample, columns=["source"])["source"].to_pylist())
    full = pq.read_table(articles_path)
    other = full.filter(pa.compute.invert(pa.compute.is_in(full["source"], pa.array(sorted(trained_on)))))
    other = other.slice(0, 300)
    pq.write_table(other, tmp_path / "other.parquet")
    result = evaluate_model(ScoreConfig(model=str(model), progress=False),
                            EvaluateConfig(data=[str(tmp_path / "other.parquet")], split="all"))
    assert result["held_out"] is True and not any("held out" in n for n in result["notes"])
    assert result["outlets_seen_in_training"]["outlets"] == 0

    # other articles of outlets it trained on, in a file it never saw: not held out, with counts
    same_outlets = full.filter(pa.compute.is_in(full["source"], pa.array(sorted(trained_on))))
    sample_ids = set(pq.read_table(unique_sample, columns=["id"])["id"].to_pylist())
    fresh = same_outlets.filter(pa.compute.invert(pa.compute.is_in(same_outlets["id"], pa.array(sorted(sample_ids)))))
    mixed = pa.concat_tables([fresh.slice(0, 100), other.slice(0, 100)])
    pq.write_table(mixed, tmp_path / "mixed.parquet")
    result = evaluate_model(ScoreConfig(model=str(model), progress=False),
                            EvaluateConfig(data=[str(tmp_path / "mixed.parquet")], split="all"))
    overlap = result["outlets_seen_in_training"]
    assert result["held_out"] is False and overlap["articles"] == 100 and overlap["of_articles"] == 200
    assert 0 < overlap["outlets"] < overlap["of_outlets"]
    assert any(f"{overlap['outlets']} of {overlap['of_outlets']} evaluated outlet(s) (100 of 200 articles) were in "
               "the model's training data" in n for n in result["notes"]), result["notes"]


@pytest.mark.slow
def test_aggregate_and_evaluate_read_the_same_articles(tmp_path, unique_sample, tiny_model_dir):
    """An article id in two input files, scored by two runs, the later run scoring the file whose path sorts
    last: `aggregate` and `evaluate --scores` both keep the row of the path that sorts first (not the latest
    scored_at) and both leave out an id whose rows name different outlets (outlets.py: the duplicate-id rule)."""
    import math

    from allsides_batch.analysis.aggregate import outlet_aggregates
    from allsides_batch.config import AggregateConfig
    from allsides_batch.scoring import score_corpus

    table = pq.read_table(unique_sample).slice(0, 60)
    ids = table["id"].to_pylist()
    solo, ambiguous = ids[30], ids[31]  # in both files: one under the same outlet, one under two outlets
    sources = table["source"].to_pylist()
    sources[30] = "Solo Outlet"
    a = table.set_column(table.schema.get_field_index("source"), "source", pa.array(sources)).slice(0, 40)
    texts, b_sources = table["text"].to_pylist(), list(sources)
    texts[30], b_sources[31] = texts[50], "Another Outlet"  # the same id with other text; the same id elsewhere
    b = table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts))
    b = b.set_column(b.schema.get_field_index("source"), "source", pa.array(b_sources)).slice(30, 30)
    inputs = tmp_path / "in"
    inputs.mkdir()
    pq.write_table(a, inputs / "a.parquet")
    pq.write_table(b, inputs / "b.parquet")
    out = tmp_path / "out"
    for files in (["a.parquet"], ["a.parquet", "b.parquet"]):  # b is scored by the later run
        score_corpus(ScoreConfig(model=tiny_model_dir, input=[str(inputs / f) for f in files], output=str(out),
                                 max_length=64, device="cpu", progress=False, workers=0))
    rows = {}
    for part in sorted((out / "scores").rglob("*.parquet")):
        for r in pq.read_table(part).to_pylist():
            rows.setdefault(r["id"], []).append(r)
    first, later = sorted(rows[solo], key=lambda r: r["scored_at"])
    assert first["scored_at"] < later["scored_at"] and first["bias_score"] != later["bias_score"]

    agg = outlet_aggregates(AggregateConfig(scores=str(out), output=str(tmp_path / "agg"), window="all",
                                            min_articles=1))
    outlet_rows = {r["outlet"]: r for r in pq.read_table(agg.output_path).to_pylist()}
    ev = evaluate_scores(str(out), EvaluateConfig(data=[str(unique_sample)], split="all", min_articles=1),
                         labelled=_first(select_labelled(EvaluateConfig(data=[str(unique_sample)], split="all")), 60))
    # the same articles: 60 ids, less the one whose rows name two outlets
    assert agg.aggregated_articles == ev["evaluated"] == 59 and ev["unscored"] == 0
    assert agg.conflicting_ids == ev["conflicting_ids"] == 1 and agg.conflicting_examples == [ambiguous]
    assert "Another Outlet" not in outlet_rows
    # the same row of the duplicated id: the one from a.parquet, scored first
    assert outlet_rows["Solo Outlet"]["n_articles"] == 1
    assert outlet_rows["Solo Outlet"]["mean_bias_score"] == pytest.approx(first["bias_score"], rel=1e-12)
    assert outlet_rows["Solo Outlet"]["mean_bias_score"] != pytest.approx(later["bias_score"], rel=1e-12)
    labelled = select_labelled(EvaluateConfig(data=[str(unique_sample)], split="all"))
    at = labelled.ids.index(solo)
    one = _first(labelled, at + 1)
    one.ids, one.labels, one.sources = one.ids[at:], one.labels[at:], one.sources[at:]
    ev_solo = evaluate_scores(str(out), EvaluateConfig(data=[str(unique_sample)], split="all"), labelled=one)
    y = int(one.labels[0])

    def loss(r):
        p = np.array([r["p_left"], r["p_center"], r["p_right"]], dtype=np.float64)
        return -math.log(p[y] / p.sum())

    assert ev_solo["evaluated"] == 1 and ev_solo["articles"]["log_loss"] == pytest.approx(loss(first), rel=1e-9)
    assert ev_solo["articles"]["log_loss"] != pytest.approx(loss(later), rel=1e-9)
