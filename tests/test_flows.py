"""The Prefect flows under a real local Prefect server (prefect_test_harness): score-corpus gives the
same scores and aggregates as the library called directly, artifacts are created, reruns add
nothing, train-model publishes only a model that passed evaluation."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

RUN_DATE = "2026-11-28"


@pytest.fixture(scope="session")
def corpus_dir(articles_sample, tmp_path_factory) -> str:
    """Three corpus files of 100 real articles each (every other outlet, so files mix outlets)."""
    table = pq.read_table(articles_sample)
    table = table.take(np.arange(0, len(table), 2))
    out = tmp_path_factory.mktemp("corpus")
    for i in range(3):
        pq.write_table(table.slice(i * 100, 100), out / f"day-{i}.parquet")
    return str(out)


def _scores(output: str) -> pa.Table:
    files = sorted(str(p) for p in __import__("pathlib").Path(output, "scores").rglob("*.parquet"))
    table = pa.concat_tables(pq.read_table(f) for f in files)
    return table.drop_columns(["run_id", "scored_at"]).sort_by("id")


def _aggregates(path: str) -> pa.Table:
    return pq.read_table(path).drop_columns(["aggregated_at"]).sort_by("outlet")


def _assert_tables_close(a: pa.Table, b: pa.Table) -> None:
    assert a.column_names == b.column_names and a.num_rows == b.num_rows
    for name in a.column_names:
        x, y = a[name].to_pylist(), b[name].to_pylist()
        if a.schema.field(name).type in (pa.float32(), pa.float64()):
            np.testing.assert_allclose(np.array(x, dtype=float), np.array(y, dtype=float), atol=1e-5, err_msg=name)
        else:
            assert x == y, name


def _artifacts(flow_run_id, key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


def test_score_corpus_flow_equals_library(prefect_server, corpus_dir, tiny_model_dir, tmp_path):
    from allsides_batch.analysis.aggregate import outlet_aggregates
    from allsides_batch.config import AggregateConfig, ScoreConfig
    from allsides_batch.scoring import score_corpus
    from flows.score_corpus import score_corpus_flow

    opts = dict(max_length=64, device="cpu", workers=1)
    flow_out = tmp_path / "flow"
    state = score_corpus_flow(corpus=[corpus_dir], model=tiny_model_dir, output=str(flow_out), run_date=RUN_DATE,
                              shard_size=2, fan_out="local", min_articles=3, return_state=True, **opts)
    assert state.is_completed(), state.message
    night = state.result()
    assert night["files"] == 3 and night["shards"] == 2
    assert night["input_rows"] == 300 == night["scored_rows"] + night["quarantined_rows"]

    lib_out = tmp_path / "lib"
    lib = score_corpus(ScoreConfig(model=tiny_model_dir, input=[corpus_dir], output=str(lib_out), progress=False,
                                   **opts))
    agg = outlet_aggregates(AggregateConfig(scores=str(lib_out / "scores"), output=str(lib_out / "agg"),
                                            model_id=lib.model_id, min_articles=3))
    assert night["model_id"] == lib.model_id
    first = _scores(str(flow_out))
    _assert_tables_close(first, _scores(str(lib_out)))
    _assert_tables_close(_aggregates(night["aggregates"]), _aggregates(agg.output_path))
    assert night["aggregates"].startswith(str(flow_out / "nights" / RUN_DATE))
    assert os.path.getsize(night["report"]["outlet_chart"]) > 1000

    run_id = state.state_details.flow_run_id
    table = _artifacts(run_id, "outlet-aggregates")
    assert len(table) == 1 and "mean_bias_score" in str(table[0].data)
    summary = _artifacts(run_id, "score-corpus-summary")
    assert "| quarantined |" in summary[0].data and lib.model_id in summary[0].data
    progress = _artifacts(run_id, "score-corpus-progress")
    assert progress and float(progress[0].data) == 100.0
    chart = _artifacts(run_id, "outlet-chart")[0].data  # a link to the PNG under the output root, not its bytes
    assert "base64" not in chart and chart.endswith(f"({Path(night['report']['outlet_chart']).as_uri()})"), chart
    assert len(chart) < 1000 and f"]({(flow_out / 'nights' / RUN_DATE / 'report').as_uri()}/" in summary[0].data

    # The next night over the same files (`corpus` as one path, as `--param corpus=DIR` gives it):
    # nothing is pending, nothing is scored twice.
    again = score_corpus_flow(corpus=corpus_dir, model=tiny_model_dir, output=str(flow_out), run_date=RUN_DATE,
                              shard_size=2, min_articles=3, **opts)
    assert again["files"] == 0 and again["input_rows"] == 0
    assert _scores(str(flow_out)).equals(first)


def test_score_corpus_flow_refuses_bad_input(prefect_server, corpus_dir, tmp_path):
    from flows.score_corpus import score_corpus_flow

    state = score_corpus_flow(corpus=[corpus_dir], model="latest", models_root=str(tmp_path / "none"),
                              output=str(tmp_path / "out"), return_state=True)
    assert state.is_failed() and "publish one first" in state.message
    state = score_corpus_flow(corpus=[corpus_dir], run_date="last tuesday", output=str(tmp_path / "out"),
                              return_state=True)
    assert state.is_failed() and "YYYY-MM-DD" in state.message
    assert not (tmp_path / "out").exists()


def test_train_model_flow_publishes_only_on_success(prefect_server, articles_sample, tiny_model_dir, tmp_path):
    from allsides_batch.model import model_id
    from flows.train_model import train_model_flow

    root = tmp_path / "models"
    kwargs = dict(kind="transformer", data=[str(articles_sample)], base_model=tiny_model_dir, models_root=str(root),
                  max_steps=2, max_length=32, train_batch_size=8, max_eval_samples=64, device="cpu")
    result = train_model_flow(output=str(tmp_path / "run1"), recipe={"adversary_weight": 0.2}, **kwargs)
    assert result["data"]["articles"] == 600 and 55 <= result["data"]["outlets"] <= 60
    assert os.path.realpath(root / "latest") == os.path.realpath(result["path"])
    assert result["model_id"] == model_id(str(root / "latest"))
    assert 0.0 <= result["quality"]["macro_f1"] <= 1.0
    recipe = json.loads((root / "latest" / "training_recipe.json").read_text())["config"]
    assert recipe["adversary_weight"] == 0.2 and recipe["max_steps"] == 2  # `recipe` reaches TrainConfig

    # Same recipe, another seed, but a quality bar no model can pass: trained, not published.
    state = train_model_flow(output=str(tmp_path / "run2"), seed=7, min_macro_f1=1.01, return_state=True, **kwargs)
    assert state.is_failed() and "not published" in state.message
    assert os.path.isfile(tmp_path / "run2" / "model.safetensors")
    assert os.path.realpath(root / "latest") == os.path.realpath(result["path"])
    assert sorted(os.listdir(root)) == sorted([result["model_id"], "latest"])


def test_shards_of():
    from flows.score_corpus import shards_of

    assert shards_of(["a", "b", "c", "d", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert shards_of([], 3) == []


def test_main_job_trains_then_scores_and_prints_the_table(prefect_server, corpus_dir, tiny_model_dir, tmp_path):
    from flows.__main__ import main

    args = ["--corpus", corpus_dir, "--output", str(tmp_path / "out"), "--models-root", str(tmp_path / "models"),
            "--kind", "transformer", "--base-model", tiny_model_dir, "--train-steps", "1", "--max-length", "32",
            "--run-date", RUN_DATE]
    out = io.StringIO()
    assert main(args, out=out) == 0
    out = out.getvalue()
    assert os.path.islink(tmp_path / "models" / "latest")
    assert "300 articles in" in out and "aggregates: " + str(tmp_path / "out" / "nights" / RUN_DATE) in out
    assert "chart:      " in out and "mean bias" in out
    # again: the model exists, nothing is left to score, the table is printed all the same
    out = io.StringIO()
    assert main(args, out=out) == 0
    out = out.getvalue()
    assert "0 articles in" in out and "no unscored files" in out and "mean bias" in out


def test_main_job_bad_input_is_one_line_and_exit_2(prefect_server, tiny_model_dir, tmp_path):
    from flows.__main__ import main

    err = io.StringIO()
    code = main(["--corpus", str(tmp_path / "missing.parquet"), "--output", str(tmp_path / "out"),
                 "--models-root", str(tmp_path / "models"), "--base-model", tiny_model_dir], err=err)
    err = err.getvalue().strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and "missing.parquet" in err[-1]
    assert not (tmp_path / "models" / "latest").exists()


def test_main_job_with_the_default_linear_model(prefect_server, corpus_dir, tmp_path):
    """What `make run` does by default: train-model trains the linear kind, score-corpus scores with it
    (no int8: a linear model has none), the aggregate and table come out."""
    from allsides_batch.model import read_model_kind
    from flows.__main__ import main

    args = ["--corpus", corpus_dir, "--output", str(tmp_path / "out"), "--models-root", str(tmp_path / "models"),
            "--kind", "linear", "--run-date", RUN_DATE]
    out = io.StringIO()
    assert main(args, out=out) == 0
    assert read_model_kind(str(tmp_path / "models" / "latest"))["kind"] == "linear"
    text = out.getvalue()
    assert "300 articles in" in text and "mean bias" in text
    scores = _scores(str(tmp_path / "out"))
    assert scores.num_rows == 300 and set(scores["label"].to_pylist()) <= {"left", "center", "right"}
    # the probabilities are the linear model's own
    from allsides_batch.calibration import softmax
    from allsides_batch.linear_model import LinearModel
    from allsides_batch.text.prep import TextPrep, prepare_text

    model_dir = str(tmp_path / "models" / "latest")
    corpus = pa.concat_tables(
        pq.read_table(p) for p in sorted(__import__("pathlib").Path(corpus_dir).glob("*.parquet"))
    )
    corpus = corpus.sort_by("id").to_pydict()
    prep = TextPrep.load(model_dir)
    texts = [prepare_text(t, x, prep, source=s) for t, x, s in zip(corpus["title"], corpus["text"], corpus["source"])]
    expected = softmax(LinearModel.load(model_dir).logits(texts))
    assert scores["id"].to_pylist() == corpus["id"]
    np.testing.assert_allclose(scores["p_right"].to_numpy(), expected[:, 2], atol=1e-6)
