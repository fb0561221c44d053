"""explain: a linear model's exact term contributions reproduce the logits `score` wrote, for one article
and for an outlet, through the CLI; an outlet's top terms follow its articles; the model card lists the
strongest terms."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from allsides_batch.__main__ import app


@pytest.fixture(scope="module")
def model_and_scores(unique_sample, tmp_path_factory):
    from allsides_batch.config import ScoreConfig, TrainConfig
    from allsides_batch.scoring import score_corpus
    from allsides_batch.training.train import train_model

    tmp = tmp_path_factory.mktemp("explain")
    train_model(TrainConfig(kind="linear", data=[str(unique_sample)], output=str(tmp / "m"), linear_outlet_folds=0,
                            progress=False))
    summary = score_corpus(ScoreConfig(model=str(tmp / "m"), input=[str(unique_sample)], output=str(tmp / "s"),
                                       progress=False))
    scores = pa.concat_tables(pq.read_table(p) for p in summary.parts)
    return tmp / "m", {r["id"]: r for r in scores.to_pylist()}


def _explain(*args):
    result = CliRunner().invoke(app, ["explain", *map(str, args)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def _scored_logit(row: dict) -> float:
    return math.log(row["p_right"] / row["p_left"])  # no temperature: T = 1


def test_contributions_reproduce_the_scored_logit_of_an_article(model_and_scores, unique_sample):
    model, scores = model_and_scores
    for article_id in list(scores)[:3]:
        out, err = _explain("--model", model, "--input", unique_sample, "--id", article_id, "--top", 5)
        assert out["articles"] == 1 and out["temperature"] == 1.0
        assert out["mean_bias_logit"] == pytest.approx(_scored_logit(scores[article_id]), abs=2e-4)
        assert out["intercept"] + out["terms_sum"] == pytest.approx(out["mean_bias_logit"], abs=1e-6)
        assert len(out["push_right"]) <= 5 and "pushes right" in err
        assert all(t["contribution"] > 0 for t in out["push_right"])
        assert all(t["contribution"] < 0 for t in out["push_left"])


def test_an_outlets_terms_follow_its_articles(model_and_scores, unique_sample, tmp_path):
    model, scores = model_and_scores
    table = pq.read_table(unique_sample)
    sources = table["source"].to_pylist()
    outlet = max(set(sources), key=sources.count)
    rows = [i for i, s in enumerate(sources) if s == outlet]
    out, _ = _explain("--model", model, "--input", unique_sample, "--outlet", outlet)
    ids = table["id"].to_pylist()
    mean_logit = np.mean([_scored_logit(scores[ids[i]]) for i in rows])
    assert out["articles"] == len(rows) and out["mean_bias_logit"] == pytest.approx(mean_logit, abs=2e-4)
    # the same outlet name on other articles (another outlet's texts): other top terms
    other = next(s for s in sorted(set(sources), key=sources.count, reverse=True) if s != outlet)
    donor = [i for i, s in enumerate(sources) if s == other]
    swapped = table.take(donor).set_column(table.schema.get_field_index("source"), "source",
                                           pa.array([outlet] * len(donor)))
    pq.write_table(swapped, tmp_path / "swapped.parquet")
    after, _ = _explain("--model", model, "--input", tmp_path / "swapped.parquet", "--outlet", outlet)
    before_terms = {t["term"] for t in out["push_right"] + out["push_left"]}
    after_terms = {t["term"] for t in after["push_right"] + after["push_left"]}
    assert before_terms != after_terms and after["articles"] == len(donor)


def test_explain_refuses_what_it_cannot_do(model_and_scores, unique_sample, tiny_model_dir):
    model, _ = model_and_scores
    for args, words in (([], "exactly one of --id"), (["--id", "no-such-id"], "no article with id"),
                        (["--id", "x", "--outlet", "y"], "exactly one of --id")):
        result = CliRunner().invoke(app, ["explain", "--model", str(model), "--input", str(unique_sample), *args])
        assert result.exit_code == 2 and words in result.output, result.output
    result = CliRunner().invoke(app, ["explain", "--model", tiny_model_dir, "--input", str(unique_sample),
                                      "--id", "x"])
    assert result.exit_code == 2 and "transformer model" in result.output


def test_model_card_lists_the_strongest_terms(model_and_scores):
    from allsides_batch.analysis.explain import load_explainer

    model, _ = model_and_scores
    card = (model / "README.md").read_text()
    terms = load_explainer(str(model)).model.strongest_terms(5)
    assert "Terms that push hardest" in card
    for term, _ in terms["right"] + terms["left"]:
        assert f"`{term}`" in card
