"""The full-text linear model on real shared articles: trained, saved without pickle, reloaded and scored
through the production scorer with the same probabilities scikit-learn gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from allsides_batch.config import TrainConfig
from allsides_batch.training.linear import LinearModel, fit_tfidf_logreg, outlet_sample_weights
from allsides_batch.training.train import train_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_slice(articles_path, tmp_path_factory):
    """Every 12th shared article: about 3,000 real articles from most outlets."""
    table = pq.read_table(articles_path)
    path = tmp_path_factory.mktemp("real") / "slice.parquet"
    pq.write_table(table.take(np.arange(0, table.num_rows, 12)), path)
    return path


@pytest.fixture(scope="module")
def linear_dir(real_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("linear") / "model"
    train_model(TrainConfig(kind="linear", data=[str(real_slice)], output=str(out), test=[str(real_slice)]))
    return out


def test_model_directory_holds_no_pickle(linear_dir):
    names = set(os.listdir(linear_dir))
    assert {"allsides_model.json", "vectorizer.json", "linear.safetensors", "text_preparation.json",
            "training_recipe.json", "metrics.json", "README.md"} <= names
    for name in names:
        head = (linear_dir / name).read_bytes()[:2]
        assert not head.startswith(b"\x80"), f"{name} looks like a pickle"  # pickle protocol 2+ opcode PROTO
        assert not name.endswith((".pkl", ".pickle", ".joblib", ".bin", ".pt"))
    assert json.loads((linear_dir / "allsides_model.json").read_text())["kind"] == "linear"
    metrics = json.loads((linear_dir / "metrics.json").read_text())
    assert metrics["validation"]["n"] > 100 and metrics["test"]["n"] > 2000
    assert metrics["validation"]["outlets"]["min_articles"] == 20
    card = (linear_dir / "README.md").read_text()
    assert "TF-IDF" in card and "outlet" in card


def test_reloaded_model_gives_scikit_learns_probabilities(real_slice):
    """An independent reference: scikit-learn's own TfidfVectorizer + LogisticRegression fitted on the
    same texts. The saved-and-reloaded model must give the same probabilities."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from allsides_batch.models.calibration import softmax
    from allsides_batch.training.data import load_labelled

    data = load_labelled([str(real_slice)])
    train, held = data.subset(range(0, 2000)), data.subset(range(2000, len(data)))
    model, _ = fit_tfidf_logreg(train.texts, train.labels, train.sources, max_features=None)
    reference = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2,
                                dtype=np.float32)
    clf = LogisticRegression(max_iter=1000).fit(reference.fit_transform(train.texts), train.labels)
    expected = clf.predict_proba(reference.transform(held.texts))

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model.save(tmp)
        loaded = LinearModel.load(tmp)
    got = softmax(loaded.logits(held.texts))
    assert got.shape == (len(held), 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_score_cli_gives_the_models_probabilities(linear_dir, real_slice, tmp_path):
    """The production path (spawned worker processes, Parquet out) against the model applied directly."""
    from allsides_batch.models.calibration import softmax
    from allsides_batch.text.prep import TextPrep, prepare_text

    inp = tmp_path / "in.parquet"
    table = pq.read_table(real_slice).slice(0, 400)
    pq.write_table(table, inp)
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "allsides_batch", "score", "--model", str(linear_dir), "--input",
                          str(inp), "--output", str(out), "--no-progress"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["scored_rows"] == 400 and summary["quarantined_rows"] == 0
    scores = pq.read_table(summary["parts"][0]).to_pydict()
    model = LinearModel.load(str(linear_dir))
    prep = TextPrep.load(str(linear_dir))
    rows = table.to_pydict()
    texts = [prepare_text(t, x, prep, source=s) for t, x, s in zip(rows["title"], rows["text"], rows["source"])]
    expected = softmax(model.logits(texts))
    order = {i: k for k, i in enumerate(rows["id"])}
    idx = [order[i] for i in scores["id"]]
    got = np.stack([scores["p_left"], scores["p_center"], scores["p_right"]], axis=1)
    np.testing.assert_allclose(got, expected[idx], atol=1e-6)
    assert scores["n_tokens"][0] > 0 and not any(scores["truncated"])
    # model_id: the same for another run, another for another model
    again = subprocess.run([sys.executable, "-m", "allsides_batch", "score", "--model", str(linear_dir), "--input",
                            str(inp), "--output", str(out), "--no-progress"], capture_output=True, text=True)
    assert json.loads(again.stdout.strip().splitlines()[-1])["files_skipped"] == 1


def test_linear_refuses_int8_and_incomplete_directories(linear_dir, tmp_path):
    from allsides_batch.config import ScoreConfig
    from allsides_batch.errors import UserError
    from allsides_batch.scoring.engine import Scorer

    with pytest.raises(UserError, match="int8 applies to transformer"):
        Scorer.from_config(ScoreConfig(model=str(linear_dir), quantize="int8"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "allsides_model.json").write_text(json.dumps({"kind": "linear"}))
    with pytest.raises(UserError, match="missing vectorizer.json, linear.safetensors"):
        LinearModel.load(str(broken))


def test_outlet_weights_give_every_outlet_the_same_total():
    sources = ["a"] * 6 + ["b"] * 2 + ["c"]
    w = outlet_sample_weights(sources, 1.0)
    totals = {s: w[[i for i, x in enumerate(sources) if x == s]].sum() for s in "abc"}
    assert totals["a"] == pytest.approx(totals["b"]) == pytest.approx(totals["c"])
    assert w.mean() == pytest.approx(1.0)
    assert outlet_sample_weights(sources, 0.0) is None


def _toy(n_per_outlet: int = 6):
    """Articles of 6 outlets (2 per label) with label words, plus one word only outlet 'o0' uses."""
    from allsides_batch.training.data import LabelledData

    words = {0: "alpha beta", 1: "gamma delta", 2: "epsilon zeta"}
    texts, labels, sources = [], [], []
    for o in range(6):
        label = o % 3
        for k in range(n_per_outlet):
            extra = " signaturezz" if o == 0 else ""
            texts.append(f"{words[label]} common text number{k}{extra}")
            labels.append(label)
            sources.append(f"o{o}")
    return LabelledData(texts=texts, labels=np.asarray(labels), sources=sources,
                        ids=[str(i) for i in range(len(texts))])


def test_min_outlets_drops_terms_one_outlet_owns():
    data = _toy()
    with_all, _ = fit_tfidf_logreg(data.texts, data.labels, data.sources, min_df=1)
    robust, _ = fit_tfidf_logreg(data.texts, data.labels, data.sources, min_df=1, min_outlets=2)
    assert "signaturezz" in with_all.vocabulary and "signaturezz" not in robust.vocabulary
    assert "alpha" in robust.vocabulary and "common text" in robust.vocabulary


def test_refit_learns_from_the_validation_outlets_too():
    from allsides_batch.training.linear import fit_linear_model

    data = _toy()
    val_rows = [i for i, s in enumerate(data.sources) if s == "o0"]
    train = data.subset([i for i in range(len(data)) if i not in val_rows])
    val = data.subset(val_rows)
    cfg = TrainConfig(kind="linear", linear_min_df=1)
    refit = fit_linear_model(cfg, train, val)
    plain = fit_linear_model(TrainConfig(kind="linear", linear_min_df=1, linear_refit=False), train, val)
    assert "signaturezz" in refit.model.vocabulary and "signaturezz" not in plain.model.vocabulary
    assert refit.metrics["refit_on_validation"] and not plain.metrics["refit_on_validation"]
    # validation figures are the first fit's in both: the same numbers
    assert refit.metrics["validation"]["log_loss"] == pytest.approx(plain.metrics["validation"]["log_loss"])


@pytest.mark.parametrize("ngram_max", [1, 2, 3])
def test_counts_equal_scikit_learns_count_vectorizer(real_slice, ngram_max):
    """The scorer's own n-gram lookup (word ids, bigram pairs as integers) against CountVectorizer."""
    from sklearn.feature_extraction.text import CountVectorizer

    from allsides_batch.training.data import load_labelled

    texts = load_labelled([str(real_slice)]).texts[:300] + ["", "a", "Ünïcode wörds ünïcode wörds", "x y z " * 3]
    fitted = CountVectorizer(ngram_range=(1, ngram_max), min_df=2).fit(texts[:200])
    vocab = fitted.get_feature_names_out().tolist()
    model = LinearModel(vocabulary=vocab, idf=np.ones(len(vocab), np.float32),
                        coef=np.zeros((3, len(vocab)), np.float32), intercept=np.zeros(3, np.float32),
                        ngram_max=ngram_max)
    ours, words = model._count(texts)
    theirs = CountVectorizer(vocabulary={t: i for i, t in enumerate(vocab)},
                             ngram_range=(1, ngram_max)).transform(texts)
    assert (ours != theirs).nnz == 0 and ours.nnz > 1000
    assert words[-4:].tolist() == [0, 0, 4, 0]  # "a", "x", "y", "z" are too short for the token pattern


def test_model_directory_records_the_outlets_it_was_trained_on(linear_dir, real_slice):
    """training_outlets.json: every source and registered domain of the rows the saved weights were fitted on
    (a linear model is refit on training + validation, so all rows), with article counts, and the validation
    rows' outlets apart."""
    from collections import Counter

    from allsides_batch.outlets import read_training_outlets, registered_domain

    raw = json.loads((linear_dir / "training_outlets.json").read_text())
    recipe = json.loads((linear_dir / "training_recipe.json").read_text())["split_sizes"]
    table = pq.read_table(real_slice, columns=["source", "url"])
    assert raw["fitted_on"] == "training and validation rows"
    assert raw["articles"] == recipe["train"] + recipe["validation"] == sum(raw["sources"].values())
    assert raw["sources"] == dict(Counter(table["source"].to_pylist()))  # every row kept: all of them
    domains = Counter(d for d in map(registered_domain, table["url"].to_pylist()) if d)
    assert raw["domains"] == dict(domains) and len(domains) > 50
    assert raw["validation"]["articles"] == recipe["validation"]
    assert len(raw["validation"]["sources"]) == recipe["validation_outlets"]
    trained = read_training_outlets(str(linear_dir))
    assert trained.sources == raw["sources"] and trained.articles == raw["articles"]
