"""The score-corpus night's artifacts: small ones in Prefect's database (table, summary), the chart and
the report files as links to the files under the output root, never their bytes (no base64 images)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("prefect")

from allsides_batch.flows import artifacts  # noqa: E402
from allsides_batch.flows.score_corpus import as_path_list  # noqa: E402


def _night(tmp_path) -> tuple[dict, dict, dict]:
    agg_path = tmp_path / "nights" / "2026-11-28" / "aggregates" / "part-0.parquet"
    agg_path.parent.mkdir(parents=True)
    pq.write_table(pa.table({
        "outlet": ["A", "B"], "n_articles": [30, 40], "mean_bias_score": [-0.5, 0.25], "ci95_low": [-0.6, 0.1],
        "ci95_high": [-0.4, 0.4], "outlet_label": ["left", "center"], "share_left": [0.7, 0.2],
        "share_center": [0.2, 0.6], "share_right": [0.1, 0.2], "mean_confidence": [0.8, 0.7],
        "low_n": [False, False]}), agg_path)
    report_dir = tmp_path / "nights" / "2026-11-28" / "report (night)"
    report_dir.mkdir(parents=True)
    chart = report_dir / "outlets.png"
    chart.write_bytes(b"\x89PNG" + b"\0" * 200_000)
    report = {"outlet_chart": str(chart), "trend_chart": None, "table": str(report_dir / "summary.md")}
    agg = {"output_path": str(agg_path), "aggregated_articles": 70, "outlets": 2}
    shards = [{"seconds": 2.0, "input_rows": 70, "scored_rows": 70, "quarantined_rows": 0}]
    summary = artifacts.night_summary("2026-11-28", "abc123", "/models/m", str(tmp_path), shards, agg, report,
                                      3.0, "local", 1)
    return summary, agg, report


def test_publish_night_links_the_chart(tmp_path, monkeypatch):
    made: dict[str, tuple] = {}

    def recorder(kind):
        def create(*args, **kwargs):
            made[kwargs["key"]] = (kind, args, kwargs)
        return create

    for name in ("create_table_artifact", "create_markdown_artifact", "create_link_artifact"):
        monkeypatch.setattr(artifacts, name, recorder(name))
    assert not hasattr(artifacts, "create_image_artifact")
    summary, agg, report = _night(tmp_path)
    artifacts.publish_night(summary, agg, report)

    kind, args, kwargs = made["outlet-chart"]
    assert kind == "create_link_artifact"
    link = args[0] if args else kwargs["link"]
    assert link.startswith("file:///") and link.endswith("/report%20%28night%29/outlets.png")
    assert "base64" not in repr(made) and len(repr(made)) < 5000  # no chart bytes anywhere
    table = made["outlet-aggregates"][1][0]
    assert [r["outlet"] for r in table] == ["B", "A"]  # the table artifact is the small per-outlet table
    markdown = made["score-corpus-summary"][1][0]
    assert f"[outlets.png]({link})" in markdown and "summary.md" in markdown and "trend chart" not in markdown


def test_file_link():
    assert artifacts.file_link("s3://bucket/night/report/outlets.png") == "s3://bucket/night/report/outlets.png"
    assert artifacts.file_link("/data/out/outlets.png") == "file:///data/out/outlets.png"
    relative = artifacts.file_link("runs/nightly/outlets.png")
    assert relative == (Path.cwd() / "runs/nightly/outlets.png").as_uri()


def test_chart_missing_publishes_no_chart(tmp_path, monkeypatch):
    made = []
    for name in ("create_table_artifact", "create_markdown_artifact", "create_link_artifact"):
        monkeypatch.setattr(artifacts, name, lambda *a, _n=name, **k: made.append((_n, k["key"])))
    summary, agg, report = _night(tmp_path)
    artifacts.publish_night(summary, agg, {**report, "outlet_chart": None})
    assert ("create_link_artifact", "outlet-chart") not in made


@pytest.mark.parametrize("value,expected", [
    ("/data/today", ["/data/today"]), (["/a", "/b"], ["/a", "/b"]), (("/a",), ["/a"]),
])
def test_corpus_one_path_or_several(value, expected):
    assert as_path_list(value, "corpus") == expected


@pytest.mark.parametrize("value", [[], "", ["/a", ""], [1]])
def test_corpus_refuses_empty(value):
    from allsides_batch.errors import UserError

    with pytest.raises(UserError, match="corpus must be a path or a list of paths"):
        as_path_list(value, "corpus")


def test_flow_parameters_accept_a_single_path():
    """`--param corpus=/data/today` (a string) passes the deployment's parameter schema."""
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools.validation import validate

    from allsides_batch.flows.score_corpus import score_corpus_flow
    from allsides_batch.flows.train_model import train_model_flow

    for flow, params in ((score_corpus_flow, {"corpus": "/data/today"}),
                         (train_model_flow, {"data": "/data/x.parquet", "test": "/data/t.parquet"})):
        schema = parameter_schema(flow.fn).model_dump_for_openapi()
        assert validate(params, schema, raise_on_error=False, ignore_required=True) == []


def test_train_model_config_from_single_paths():
    from allsides_batch.flows.train_model import train_config

    cfg = train_config({"data": "/data/x.parquet", "test": "/data/t.parquet"}, default_output="/tmp/m")
    assert cfg.data == ["/data/x.parquet"] and cfg.test == ["/data/t.parquet"]
