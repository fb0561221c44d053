"""`--config FILE` and ALLSIDES_BATCH_<COMMAND>_<OPTION> on every command built from the config
dataclasses, through the real CLI group: precedence flag > environment > file > default, unknown keys
refused in one line, and `train --config <model>/training_recipe.json` replaying a run."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from allsides_batch.__main__ import app
from allsides_batch.cli import read_config_file
from allsides_batch.errors import UserError

COMMANDS = ("train", "cv", "score", "aggregate", "evaluate", "report")


def _run(*args: str, env: dict | None = None):
    result = CliRunner().invoke(app, list(args), env=env)
    return result


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _write(path, data: dict) -> str:
    """data as JSON, TOML or YAML by the path's extension."""
    suffix = str(path).rsplit(".", 1)[1]
    if suffix == "json":
        text = json.dumps(data)
    elif suffix == "toml":
        def value(v):
            return json.dumps(v)  # strings, numbers, booleans and lists of them read the same in TOML
        lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
        for k, v in data.items():
            if isinstance(v, dict):
                lines += [f"[{k}]", *(f"{kk} = {value(vv)}" for kk, vv in v.items())]
        text = "\n".join(lines) + "\n"
    else:
        import yaml

        text = yaml.safe_dump(data)
    path.write_text(text)
    return str(path)


def _recipe(model_dir) -> dict:
    return json.loads((model_dir / "training_recipe.json").read_text())


LINEAR = {"kind": "linear", "linear_max_features": 5000, "linear_min_df": 1, "device": "cpu"}


@pytest.fixture(scope="module")
def chain(articles_sample, tmp_path_factory) -> dict:
    """train → score → aggregate, each from a config file (one of each format), with a flag and an
    environment variable overriding the file; the results for the tests below."""
    tmp = tmp_path_factory.mktemp("config-files")
    out: dict = {"tmp": tmp}
    # train: YAML with nested columns and dashed keys; --seed overrides the file, the environment
    # overrides val_fraction; progress comes from the file only
    cfg = _write(tmp / "train.yaml", {"data": [str(articles_sample)], "output": str(tmp / "m1"), **LINEAR,
                                      "columns": {"text": "text", "title": "title"}, "val-fraction": 0.2,
                                      "seed": 7, "progress": False, "split": "outlet"})
    res = _run("train", "--config", cfg, "--seed", "8", env={"ALLSIDES_BATCH_TRAIN_VAL_FRACTION": "0.25"})
    out["train"] = _json(res)
    out["model"] = tmp / "m1"
    # score: TOML; --run-id on the command line beats the file's
    cfg = _write(tmp / "score.toml", {"model": str(tmp / "m1"), "input": str(articles_sample),
                                      "output": str(tmp / "s"), "device": "cpu", "progress": False,
                                      "run_id": "from-file", "workers": 0})
    out["score"] = _json(_run("score", "--config", cfg, "--run-id", "from-flag"))
    # aggregate: JSON; the environment beats the file's min_articles
    cfg = _write(tmp / "aggregate.json", {"scores": str(tmp / "s" / "scores"), "output": str(tmp / "agg"),
                                          "min_articles": 1000, "window": "all"})
    out["aggregate"] = _json(_run("aggregate", "--config", cfg, env={"ALLSIDES_BATCH_AGGREGATE_MIN_ARTICLES": "3"}))
    return out


@pytest.mark.slow
def test_train_precedence_flag_env_file_default(chain):
    assert chain["train"]["output"] == str(chain["model"])
    config = _recipe(chain["model"])["config"]
    assert config["seed"] == 8  # flag over file
    assert config["val_fraction"] == 0.25  # environment over file
    assert config["progress"] is False and config["linear_max_features"] == 5000  # file over default
    assert config["early_stopping"] == 3  # default


@pytest.mark.slow
def test_train_replays_its_recipe(chain, tmp_path):
    """`train --config <model>/training_recipe.json --output NEW` trains the same recipe again."""
    recipe = chain["model"] / "training_recipe.json"
    replay = _json(_run("train", "--config", str(recipe), "--output", str(tmp_path / "m2")))
    assert replay["output"] == str(tmp_path / "m2")
    first, second = _recipe(chain["model"]), _recipe(tmp_path / "m2")
    assert {**first["config"], "output": None} == {**second["config"], "output": None}
    assert first["data_files"] == second["data_files"] and first["split_sizes"] == second["split_sizes"]
    assert replay["val_macro_f1"] == chain["train"]["val_macro_f1"]


@pytest.mark.slow
def test_replay_refuses_to_overwrite_the_original(chain):
    res = _run("train", "--config", str(chain["model"] / "training_recipe.json"))
    assert res.exit_code == 2 and "already holds a model" in res.output


@pytest.mark.slow
def test_score_flag_beats_file(chain):
    assert chain["score"]["run_id"] == "from-flag"


@pytest.mark.slow
def test_aggregate_environment_beats_file(chain):
    summary = chain["aggregate"]  # 10 articles per outlet: the file's 1000 would flag every outlet low_n
    assert summary["outlets"] > 0 and summary["low_n_rows"] < summary["rows"]


@pytest.mark.slow
def test_report_from_config_file(chain):
    tmp = chain["tmp"]
    cfg = _write(tmp / "report.yml", {"aggregates": str(tmp / "agg"), "output": str(tmp / "rep"), "dpi": 40,
                                      "outlet": [], "axis": "data"})
    paths = _json(_run("report", "--config", cfg, "--dpi", "50"))
    assert paths["outlet_chart"].startswith(str(tmp / "rep"))


@pytest.mark.slow
def test_evaluate_from_config_file(chain, articles_sample):
    import pyarrow.parquet as pq

    table = pq.read_table(articles_sample)  # evaluate joins labels by id: one row per id
    first = {}
    for i, article_id in enumerate(table["id"].to_pylist()):
        first.setdefault(article_id, i)
    data = chain["tmp"] / "unique.parquet"
    pq.write_table(table.take(sorted(first.values())), data)
    cfg = _write(chain["tmp"] / "evaluate.yaml", {"model": str(chain["model"]), "data": str(data),
                                                   "min_articles": 3, "device": "cpu", "progress": False})
    res = _run("evaluate", "--config", cfg, env={"ALLSIDES_BATCH_EVALUATE_MIN_ARTICLES": "2"})
    assert res.exit_code == 0, res.output
    assert res.stdout.strip()


@pytest.mark.slow
def test_cv_reads_a_training_recipe(chain, tmp_path):
    """cv takes a training recipe too; the fields it has no option for (test, overwrite, output) are ignored."""
    res = _run("cv", "--config", str(chain["model"] / "training_recipe.json"), "--folds", "2",
               "--max-articles", "200")
    assert res.exit_code == 0, res.output
    assert "ignored output, test, overwrite (no option of `cv`)" in res.stderr  # in the recipe's order
    assert not (chain["model"] / "cv.json").exists()  # the recipe's output is the model's, not cv's


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_keys_refused(command, tmp_path):
    cfg = _write(tmp_path / "c.yaml", {"bogus_key": 1, "columns": {"txt": "body"}, "output": str(tmp_path / "o")})
    res = _run(command, "--config", cfg)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "bogus_key" in errors[0] and "columns.txt" in errors[0], res.output
    if command not in ("aggregate", "report"):  # those have no column options
        assert "did you mean text_column?" in errors[0]


@pytest.mark.parametrize("command,option", [("train", "OUTPUT"), ("cv", "DATA"), ("score", "OUTPUT"),
                                            ("aggregate", "OUTPUT"), ("evaluate", "DATA"), ("report", "OUTPUT")])
def test_help_names_config_and_environment(command, option):
    res = _run(command, "--help")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "--config FILE" in text and f"ALLSIDES_BATCH_{command.upper()}_{option}" in text


@pytest.mark.slow
def test_recipe_with_unknown_top_level_key_refused(chain, tmp_path):
    recipe = _recipe(chain["model"])
    recipe["epochs"] = 3  # beside "config": not provenance, so not silently ignored
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    res = _run("train", "--config", str(path), "--output", str(tmp_path / "m"))
    assert res.exit_code == 2 and "unknown key(s) epochs next to 'config'" in res.output


@pytest.mark.slow
def test_config_file_itself_from_environment(chain, tmp_path):
    """ALLSIDES_BATCH_<COMMAND>_CONFIG names the file; a list option given one value in the file is a list."""
    cfg = _write(tmp_path / "agg.yaml", {"scores": str(chain["tmp"] / "s" / "scores"),
                                         "output": str(tmp_path / "agg"), "min_articles": 3})
    summary = _json(_run("aggregate", env={"ALLSIDES_BATCH_AGGREGATE_CONFIG": cfg}))
    assert summary["output_path"].startswith(str(tmp_path / "agg"))


@pytest.mark.parametrize("name,content,message", [
    ("c.ini", "x = 1", "give a .yaml, .yml, .toml or .json file"),
    ("c.json", "{not json", "is not valid JSON"),
    ("c.toml", "a = ", "is not valid TOML"),
    ("c.yaml", "- a\n- b\n", "must hold a mapping"),
    ("missing.yaml", None, "cannot read it"),
])
def test_bad_files(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_config_file(str(path))
    res = _run("aggregate", "--config", str(path))
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_list_value_for_single_option_refused(tmp_path):
    cfg = _write(tmp_path / "c.json", {"scores": ["a", "b"], "output": "o"})
    res = _run("aggregate", "--config", cfg)
    assert res.exit_code == 2 and "scores takes one value" in res.output
