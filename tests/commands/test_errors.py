"""Input a user can fix, given to the real CLI: one `error:` line on stderr (or click's usage error for a
missing option) and exit code 2, never a traceback, and nothing half-written left behind.

The model is a real linear model trained on the 600 shared sample articles without its outlet rule (seconds);
tests that score, or run a CLI process (resource limits, nightly's own Prefect server), are marked slow."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from scoring_runs import file_size_limit, run_cli

from allsides_batch.__main__ import app


def _cli(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_error_line_of_process(run: subprocess.CompletedProcess, *fragments: str, last: bool = True) -> str:
    """Exit 2, no traceback, exactly one `error:` line (the last line unless `last` is False)."""
    assert run.returncode == 2, (run.returncode, run.stderr[-3000:])
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and (lines[-1] == errors[0] or not last), run.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def _one_error_line(result, *fragments: str) -> str:
    """Exit 2 and exactly one `error:` line holding every fragment; returns that line."""
    assert result.exit_code == 2, (result.exit_code, result.output[-3000:], result.exception)
    assert "Traceback" not in result.output, result.output[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def scores(linear_model, unique_sample, tmp_path_factory) -> Path:
    """`score`'s output for the sample articles (unique ids, so evaluate can join labels to them)."""
    out = tmp_path_factory.mktemp("errors-scores") / "scores"
    result = _cli("score", "--model", linear_model, "--input", unique_sample, "--output", out, "--no-progress")
    assert result.exit_code == 0, result.output[-3000:]
    return out


# ---- row 9: a missing option, an impossible date, aggregates that are not aggregates ------------------------
def test_missing_required_options_are_usage_errors(tmp_path, articles_sample):
    for args, option in ((["score", "--input", articles_sample, "--output", tmp_path / "o"], "--model"),
                         (["report", "--output", tmp_path / "r"], "--aggregates"),
                         (["aggregate", "--output", tmp_path / "a"], "--scores")):
        result = _cli(*args)
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (result.output, result.exception)
        assert f"Missing option '{option}'" in result.stderr, result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_impossible_dates_are_refused(scores, tmp_path):
    for flag, value in (("--since", "2020-13-01"), ("--until", "2021-02-29")):
        result = _cli("aggregate", "--scores", scores, "--output", tmp_path / "a", flag, value)
        _one_error_line(result, f"{flag[2:]}: must be a date YYYY-MM-DD, got '{value}'")
    assert not (tmp_path / "a").exists()


def test_report_refuses_a_parquet_that_is_not_aggregates(tmp_path, articles_sample):
    fake = tmp_path / "agg" / "window=all"
    fake.mkdir(parents=True)
    pq.write_table(pq.read_table(articles_sample).slice(0, 5), fake / "part-0.parquet")
    _one_error_line(_cli("report", "--aggregates", tmp_path / "agg", "--output", tmp_path / "r"),
                    "lacks the aggregate column(s) outlet", "output directory of `aggregate`")
    (fake / "part-0.parquet").write_bytes(b"not parquet at all")
    _one_error_line(_cli("report", "--aggregates", tmp_path / "agg", "--output", tmp_path / "r"),
                    "cannot read", "as Parquet")
    assert not (tmp_path / "r").exists()


# ---- row 6: an --output that is a file, or lies under one -------------------------------------------------
@pytest.mark.slow
def test_score_output_that_is_a_file_is_refused(linear_model, articles_sample, tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    for out, what in ((afile, "is a file"), (afile / "sub" / "out", f"lies under the file {str(afile)!r}")):
        result = _cli("score", "--model", linear_model, "--input", articles_sample, "--output", out, "--no-progress")
        _one_error_line(result, what, "give a directory")
    assert afile.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_aggregate_report_and_evaluate_outputs_that_are_files_are_refused(scores, unique_sample, tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    _one_error_line(_cli("aggregate", "--scores", scores, "--output", afile / "agg"), "lies under the file")
    _cli("aggregate", "--scores", scores, "--output", tmp_path / "agg")
    _one_error_line(_cli("report", "--aggregates", tmp_path / "agg", "--output", afile), "is a file")
    _one_error_line(_cli("evaluate", "--scores", scores, "--data", unique_sample, "--output", afile), "is a file")
    assert afile.read_text() == "keep me"


# ---- row 7: a full disk or read-only output with several device processes ---------------------------------
def _half_written(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file() and (p.name.startswith(".") or ".tmp" in p.name
                                                           or p.name.startswith("part-") or "_manifest" in p.parts)]


@pytest.mark.slow
def test_full_or_read_only_output_with_two_devices_fails_in_one_line(linear_model, articles_sample, tmp_path,
                                                                    read_only_dir):
    corpus = tmp_path / "in"
    corpus.mkdir()
    table = pq.read_table(articles_sample)
    pq.write_table(table.slice(0, 300), corpus / "a.parquet")  # each file's scores part is over 20 kB
    pq.write_table(table.slice(300, 300), corpus / "b.parquet")
    out = tmp_path / "out"
    run = run_cli("score", "--model", linear_model, "--input", corpus, "--output", out, "--no-progress",
                  "--devices", "cpu:2", preexec=file_size_limit(20_000))
    _one_error_line_of_process(run, "cannot write", "file size limit")
    assert _half_written(out) == []
    run = run_cli("score", "--model", linear_model, "--input", corpus, "--output", read_only_dir / "out",
                  "--no-progress", "--devices", "cpu:2")
    _one_error_line_of_process(run, "cannot write")


# ---- row 8: evaluate --scores with NaN probabilities and ids the labelled data lacks --------------------
def _damaged_scores(scores: Path, dest: Path, nan_rows: slice, foreign_ids: slice, all_nan: bool = False) -> Path:
    """A copy of `scores` whose one part has NaN p_left in `nan_rows` (every row: all_nan) and ids no labelled
    article has in `foreign_ids`."""
    import shutil

    import numpy as np

    shutil.copytree(scores, dest)
    (part,) = (dest / "scores").rglob("part-*.parquet")
    table = pq.read_table(part)
    p_left = table["p_left"].to_numpy().copy()
    p_left[slice(None) if all_nan else nan_rows] = np.nan
    ids = table["id"].to_pylist()
    ids[foreign_ids] = [f"not-labelled-{i}" for i in range(len(ids[foreign_ids]))]
    table = table.set_column(table.schema.get_field_index("p_left"), "p_left", pa.array(p_left, pa.float32()))
    table = table.set_column(table.schema.get_field_index("id"), "id", pa.array(ids, pa.string()))
    pq.write_table(table, part)
    return dest


@pytest.mark.slow
def test_evaluate_leaves_out_nan_scores_and_unlabelled_ids_with_notes(scores, unique_sample, tmp_path):
    damaged = _damaged_scores(scores, tmp_path / "damaged", nan_rows=slice(0, 5), foreign_ids=slice(10, 13))
    result = _cli("evaluate", "--scores", damaged, "--data", unique_sample)
    assert result.exit_code == 0, (result.output[-3000:], result.exception)
    printed = json.loads(result.stdout)
    labelled = pq.read_metadata(unique_sample).num_rows
    assert (printed["non_finite_scores"], printed["scores_without_label"], printed["unscored"]) == (5, 3, 3)
    assert printed["evaluated"] == printed["articles"]["n"] == labelled - 5 - 3
    assert "5 labelled article(s) have a NaN, infinite or missing probability" in result.stderr
    assert "3 scored article(s) have an id that is not in the labelled data" in result.stderr
    every = _damaged_scores(scores, tmp_path / "all-nan", nan_rows=slice(0, 0), foreign_ids=slice(0, 0),
                            all_nan=True)
    _one_error_line(_cli("evaluate", "--scores", every, "--data", unique_sample),
                    "has a NaN, infinite or missing p_left/p_center/p_right")


# ---- row 11: --outlet-map chains and cycles ------------------------------------------------------------
def _outlets(agg: Path) -> dict[str, int]:
    table = pq.read_table(agg / "window=all" / "part-0.parquet", columns=["outlet", "n_articles"])
    return dict(zip(table["outlet"].to_pylist(), table["n_articles"].to_pylist()))


@pytest.mark.slow
def test_outlet_map_chains_resolve_to_their_end_and_cycles_are_refused(scores, tmp_path):
    assert _cli("aggregate", "--scores", scores, "--output", tmp_path / "plain").exit_code == 0
    plain = _outlets(tmp_path / "plain")
    a, b, c = sorted(plain)[:3]
    chain = tmp_path / "chain.csv"
    chain.write_text(f"name,canonical\n{a},{b}\n{b},{c}\n")
    result = _cli("aggregate", "--scores", scores, "--output", tmp_path / "chained", "--outlet-map", chain)
    assert result.exit_code == 0, result.output[-3000:]
    chained = _outlets(tmp_path / "chained")
    assert a not in chained and b not in chained and chained[c] == plain[a] + plain[b] + plain[c]
    cycle = tmp_path / "cycle.csv"
    cycle.write_text(f"name,canonical\n{a},{b}\n{b},{a}\n")
    _one_error_line(_cli("aggregate", "--scores", scores, "--output", tmp_path / "cycled", "--outlet-map", cycle),
                    f"cycle ({a} -> {b} -> {a})")
    assert not (tmp_path / "cycled").exists()


# ---- row 12: a --config value of the wrong type for a number -------------------------------------------------
@pytest.mark.slow
def test_config_values_of_the_wrong_type_for_numbers_are_refused(linear_model, scores, unique_sample, tmp_path):
    config = tmp_path / "score.yaml"
    for text, message in (("workers: true\n", "workers must be an integer (--workers), got bool True"),
                          ("batch_tokens: 2048.5\n", "batch_tokens must be an integer (--batch-tokens), got float"),
                          ("columns: {text: text}\nquantize_check: false\n", "quantize_check must be an integer")):
        config.write_text(text)
        result = _cli("score", "--model", linear_model, "--input", unique_sample, "--output", tmp_path / "out",
                      "--no-progress", "--config", config)
        _one_error_line(result, message)
    assert not (tmp_path / "out").exists()
    config = tmp_path / "aggregate.yaml"
    config.write_text("label_threshold: true\n")
    _one_error_line(_cli("aggregate", "--scores", scores, "--output", tmp_path / "agg", "--config", config),
                    "label_threshold must be a number (--label-threshold), got bool True")
    config.write_text("label_threshold: 2.5e-1\nmin_articles: 5\n")  # numbers as numbers are read as before
    assert _cli("aggregate", "--scores", scores, "--output", tmp_path / "agg", "--config", config).exit_code == 0


# ---- row 14: score input that is not Parquet ---------------------------------------------------------------
def _csv(path: Path) -> Path:
    path.write_text(f"id,source,text\n{path.name},Reuters,the senate vote\n")  # each file its own bytes
    return path


@pytest.mark.slow
def test_score_fails_when_every_input_file_is_unreadable(linear_model, tmp_path):
    out = tmp_path / "out"
    result = _cli("score", "--model", linear_model, "--input", _csv(tmp_path / "articles.csv"), "--output", out,
                  "--no-progress")
    line = _one_error_line(result, "none of the 1 input file(s) read could be read as Parquet", "nothing was scored")
    quarantine = line.split(" under ")[1].split(": give")[0]
    (part,) = Path(quarantine).glob("part-*.parquet")  # committed: where the line says
    assert pq.read_table(part)["reason"][0].as_py().startswith("unreadable file")
    assert json.loads(result.stdout)["files_unreadable"] == 1  # the run's summary is still printed


@pytest.mark.slow
def test_max_unreadable_files_sets_how_many_may_be_unreadable(linear_model, unique_sample, tmp_path):
    corpus = tmp_path / "in"
    corpus.mkdir()
    pq.write_table(pq.read_table(unique_sample).slice(0, 20), corpus / "good.parquet")
    _csv(corpus / "bad-1.parquet")
    _csv(corpus / "bad-2.parquet")
    result = _cli("score", "--model", linear_model, "--input", corpus, "--output", tmp_path / "out", "--no-progress")
    _one_error_line(result, "2 of the 3 input files read could not be read", "more than --max-unreadable-files 0.5",
                    "the 20 article(s) of the others are committed")
    config = tmp_path / "score.yaml"
    config.write_text("max_unreadable_files: 0.7\n")
    result = _cli("score", "--model", linear_model, "--input", corpus, "--output", tmp_path / "out2", "--no-progress",
                  "--config", config)
    assert result.exit_code == 0, result.output[-3000:]
    assert json.loads(result.stdout)["files_unreadable"] == 2
    _one_error_line(_cli("score", "--model", linear_model, "--input", corpus, "--output", tmp_path / "out3",
                         "--max-unreadable-files", "1.5"), "max_unreadable_files: must be a share in [0, 1]")


@pytest.mark.slow
def test_nightly_fails_in_one_line_when_the_corpus_is_unreadable(linear_model, tmp_path):
    from allsides_batch.models.registry import publish_model

    publish_model(linear_model, str(tmp_path / "models"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    _csv(corpus / "today.parquet")
    run = _nightly(corpus, tmp_path)
    # Prefect's own line about stopping its temporary server may follow the error line
    _one_error_line_of_process(run, "none of the 1 input file(s) read could be read as Parquet", last=False)
    assert not (tmp_path / "night" / "nights").exists()


@pytest.mark.slow
def test_nightly_whose_temporary_server_does_not_answer_in_time_fails_in_one_line(linear_model, tmp_path):
    """The setting from the environment is kept (0 s: no server can answer), and Prefect's RuntimeError
    becomes one line that says what to do."""
    from allsides_batch.models.registry import publish_model

    publish_model(linear_model, str(tmp_path / "models"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(pa.table({"id": ["1"], "source": ["cnn.com"], "text": ["the senate vote"]}),
                   corpus / "today.parquet")
    run = _nightly(corpus, tmp_path, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="0")
    _one_error_line_of_process(run, "temporary local server did not answer within 0 s",
                               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", last=False)
    assert not (tmp_path / "night" / "scores").exists()


def test_the_temporary_server_gets_two_minutes_unless_the_environment_says(monkeypatch):
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as startup

    from allsides_batch.flows.__main__ import EPHEMERAL_STARTUP_S, ephemeral_server

    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", raising=False)
    before = startup.value()
    with ephemeral_server():
        assert startup.value() == EPHEMERAL_STARTUP_S == 120
    assert startup.value() == before
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "7")
    with ephemeral_server():
        assert startup.value() == 7  # the environment's value is kept, lower than the job's default or not


def _nightly(corpus: Path, tmp_path: Path, **env_extra: str):
    """`nightly` on its own ephemeral Prefect server (PREFECT_API_URL unset), models published under tmp_path."""
    env = {"PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **env_extra}
    return run_cli("nightly", "--corpus", corpus, "--output", tmp_path / "night", "--models-root",
                   tmp_path / "models", "--run-date", "2026-01-02", "--no-progress", env=env,
                   unset=("PREFECT_API_URL",))


# ---- nightly: a UserError inside the job's flows is the one line, without Prefect's traceback above it ------
@pytest.mark.slow
def test_nightly_shows_bad_input_as_one_line_without_a_traceback(linear_model, tmp_path):
    from allsides_batch.models.registry import publish_model

    publish_model(linear_model, str(tmp_path / "models"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(pa.table({"id": ["1"], "body": ["the senate vote"]}), corpus / "today.parquet")
    run = _nightly(corpus, tmp_path)
    # raised in the find-unscored task; Prefect's own line about stopping its temporary server may follow
    _one_error_line_of_process(run, "missing column(s) source (source), text (text)", last=False)
