"""Logging: the CLI writes the library's log records to stderr at its --log-level (-v / -q) while the
result on stdout stays the same, and a Prefect flow run's logs hold the library's records."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from allsides_batch.__main__ import app
from allsides_batch.cli import LOG_LEVEL_ENV

INFO_LINES = ("data: train ", "linear: TF-IDF", "linear: train_loss")


@pytest.fixture(scope="module")
def small_data(articles_sample, tmp_path_factory) -> str:
    """300 of the sample's articles: a linear model trains on them in seconds."""
    table = pq.read_table(articles_sample)
    out = tmp_path_factory.mktemp("logging-data") / "small.parquet"
    pq.write_table(table.take(list(range(0, table.num_rows, 2))), out)
    return str(out)


def _train_args(data: str, output) -> list[str]:
    return ["train", "--kind", "linear", "--data", data, "--output", str(output), "--linear-max-features", "5000"]


def _result(stdout: str) -> dict:
    result = json.loads(stdout.strip().splitlines()[-1])
    result.pop("output")
    return result


@pytest.fixture(scope="module")
def default_run(small_data, tmp_path_factory) -> subprocess.CompletedProcess:
    """`python -m allsides_batch train ...` with no log option: info records on stderr, the result on stdout."""
    out = tmp_path_factory.mktemp("logging-default") / "model"
    return subprocess.run([sys.executable, "-m", "allsides_batch", *_train_args(small_data, out)],
                          capture_output=True, text=True, check=False)


@pytest.mark.slow
def test_default_level_is_info_on_stderr(default_run):
    assert default_run.returncode == 0, default_run.stderr
    for fragment in INFO_LINES:
        assert fragment in default_run.stderr, default_run.stderr
    assert "data: train" not in default_run.stdout and "DEBUG" not in default_run.stderr
    assert len(default_run.stdout.strip().splitlines()) == 1  # the result alone


@pytest.mark.slow
@pytest.mark.parametrize("options", [["-q"], ["--log-level", "warning"]])
def test_quiet_drops_info_lines_and_keeps_the_result(options, default_run, small_data, tmp_path):
    result = CliRunner().invoke(app, [*options, *_train_args(small_data, tmp_path / "model")])
    assert result.exit_code == 0, result.output
    assert not any(fragment in result.stderr for fragment in INFO_LINES), result.stderr
    assert _result(result.stdout) == _result(default_run.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("options", [["--verbose"], ["--log-level", "DEBUG"]])
def test_verbose_shows_debug_lines_and_keeps_the_result(options, default_run, small_data, tmp_path):
    result = CliRunner().invoke(app, [*options, *_train_args(small_data, tmp_path / "model")])
    assert result.exit_code == 0, result.output
    assert "DEBUG allsides_batch.cli: TrainConfig(" in result.stderr, result.stderr
    for fragment in INFO_LINES:
        assert fragment in result.stderr
    assert _result(result.stdout) == _result(default_run.stdout)


@pytest.mark.slow
def test_the_environment_sets_the_default_level(tmp_path):
    args = ["aggregate", "--scores", str(tmp_path / "none"), "--output", str(tmp_path / "out")]
    quiet = CliRunner(env={LOG_LEVEL_ENV: "error"}).invoke(app, args)
    debug = CliRunner(env={LOG_LEVEL_ENV: "debug"}).invoke(app, args)
    overridden = CliRunner(env={LOG_LEVEL_ENV: "debug"}).invoke(app, ["-q", *args])
    assert quiet.exit_code == debug.exit_code == overridden.exit_code == 2  # no such scores
    assert "DEBUG allsides_batch.cli: AggregateConfig(" in debug.stderr
    assert "DEBUG" not in quiet.stderr and "DEBUG" not in overridden.stderr
    for run in (quiet, debug, overridden):  # the one-line error stays as it was, at every level
        assert run.stderr.splitlines()[-1].startswith("error: ") and run.stdout == ""
    bad = CliRunner(env={LOG_LEVEL_ENV: "loud"}).invoke(app, args)
    assert bad.exit_code == 2 and LOG_LEVEL_ENV in bad.stderr


def test_verbose_and_quiet_together_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["-v", "-q", "aggregate", "--scores", str(tmp_path), "--output", str(tmp_path)])
    assert result.exit_code == 2 and "at most one of -v/--verbose and -q/--quiet" in result.stderr


def test_hugging_face_follows_the_cli_level_and_is_restored(tmp_path, monkeypatch):
    from transformers.utils import logging as hf_logging

    from allsides_batch.commands import aggregate

    for name in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):  # the environment's choice wins
        monkeypatch.delenv(name, raising=False)
    before = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    seen = {}
    for options in ((), ("-v",)):
        monkeypatch.setattr(aggregate, "_aggregate", lambda values, options=options: seen.setdefault(
            options, (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled(),
                      os.environ.get("TRANSFORMERS_VERBOSITY"))))
        result = CliRunner().invoke(app, [*options, "aggregate", "--scores", "x", "--output", str(tmp_path)])
        assert result.exit_code == 0, result.output
    assert seen[()] == (logging.ERROR, False, "error")  # info: Hugging Face quiet, no bars of its own
    assert seen[("-v",)][0] == logging.DEBUG and seen[("-v",)][2] == "debug"
    assert (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()) == before
    assert "TRANSFORMERS_VERBOSITY" not in os.environ and "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ


def test_library_modules_configure_no_handlers():
    """Only the front doors (allsides_batch/cli.py, allsides_batch/flows/__main__.py) install a handler or call
    basicConfig."""
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "allsides_batch"
    for path in package.rglob("*.py"):
        text = path.read_text()
        assert "basicConfig" not in text, path
        # progress goes through logging (tqdm's file= aside); `python -m allsides_batch.flows` is a front door
        # like the CLI and prints its own line
        assert "file=sys.stderr)" not in text or path.relative_to(package).as_posix() == "flows/__main__.py", path
        # the error line (cli.py) and markdown asked for with --markdown (commands/_command.py) are output
        assert "err=True" not in text or path.name in ("cli.py", "_command.py"), path
        assert "set_verbosity" not in text or path.name == "cli.py", path


@pytest.mark.slow
def test_a_flow_run_logs_the_library_records(prefect_server, tmp_path):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    import allsides_batch.flows  # noqa: F401  (names the package's loggers for Prefect's run logs)
    from allsides_batch.training.data import load_labelled, make_split

    path = tmp_path / "labelled.parquet"
    pq.write_table(pa.table({"text": ["One.", "", "Two.", "Three.", "Four."],
                             "bias_text": ["left", "right", "center", "right", "left"],
                             "source": ["A", "B", "C", "D", "E"],
                             "split": ["train", "train", "valid", "test", "train"]}), path)

    @flow(name="logging-check")
    def load_and_split() -> int:
        data = load_labelled([str(path)], split_column="split")  # warns: one row has no text
        train, _ = make_split(data, "column:split", 0.1, 0)     # info: one row is neither train nor valid
        return len(train)

    state = load_and_split(return_state=True)
    assert state.is_completed() and state.result() == 2
    APILogHandler().flush()  # the records reach the server in the background
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    records = {(log.name, log.level, log.message) for log in logs}
    assert ("allsides_batch.training.data", logging.WARNING,
            "skipped 1 row(s) with empty or null text") in records, records
    assert ("allsides_batch.training.data", logging.INFO,
            "note: 1 row(s) have split other than train/valid and are not used") in records, records
