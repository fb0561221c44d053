"""What a score-corpus run shows in Prefect's UI and prints at the end: small summaries built from
the files the library wrote (run summaries, aggregates, chart), never from data held in memory.

Prefect keeps artifacts in its database, so only small ones go there: the per-outlet table and the
markdown summary. The chart and the report files are published as links (file:// URLs of local
files, object-store URLs as they are), never as their bytes."""

from __future__ import annotations

import os
import pathlib

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

TABLE_COLUMNS = ("outlet", "n_articles", "mean_bias_score", "ci95_low", "ci95_high", "outlet_label",
                 "share_left", "share_center", "share_right", "mean_confidence", "low_n")
# The report files the night links to: (key in the report dict, label), in the order the summary lists them.
REPORT_LINKS = (("outlet_chart", "outlet chart"), ("trend_chart", "trend chart"), ("table", "summary table"),
                ("unseen_chart", "outlets the model never saw (chart)"),
                ("unseen_table", "outlets the model never saw (table)"),
                ("terms", "why the top outlets sit where they do"))


def read_run_summaries(output: str, run_ids: list[str]) -> list[dict]:
    """The scorer's run summary of each shard (every shard writes one, even with no work)."""
    from allsides_batch.storage.io import exists, read_json
    from allsides_batch.storage.layout import run_summary

    paths = [run_summary(output, run_id) for run_id in run_ids]
    missing = [p for p in paths if not exists(p)]
    if missing:
        raise RuntimeError(f"{len(missing)} shard summary file(s) missing, e.g. {missing[0]}: a shard did not finish")
    return [read_json(p) for p in paths]


def aggregate_rows(path: str) -> list[dict]:
    """The per-outlet table, most-covered outlets first (the aggregates are one small file)."""
    from allsides_batch.storage.io import read_table

    rows = read_table(path, TABLE_COLUMNS).to_pylist()
    rows.sort(key=lambda r: (-r["n_articles"], r["outlet"]))
    return [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


def night_summary(  # noqa: PLR0913 (the night's facts as plain values: Night lives in score_corpus.py, above this)
    run_date: str, score_id: str, model_dir: str, output: str, shards: list[dict], agg: dict, report: dict,
    seconds: float, fan_out: str, n_files: int,
) -> dict:
    from allsides_batch.storage.layout import Layout

    layout = Layout(output, score_id)
    scoring_s = sum(s["seconds"] for s in shards)
    n_in = sum(s["input_rows"] for s in shards)
    return {
        "run_date": run_date, "model_id": score_id, "model_dir": model_dir, "fan_out": fan_out,
        "files": n_files, "shards": len(shards),
        "input_rows": n_in, "scored_rows": sum(s["scored_rows"] for s in shards),
        "quarantined_rows": sum(s["quarantined_rows"] for s in shards),
        # per shard-second: with N workers in parallel the night's rate is up to N times this
        "articles_per_s": round(n_in / scoring_s, 2) if scoring_s else 0.0,
        "seconds": round(seconds, 1),
        "scores": layout.scores_dir(), "quarantine": layout.quarantine_dir(),
        "aggregates": agg["output_path"], "aggregated_articles": agg["aggregated_articles"],
        "outlets": agg["outlets"], "outlets_seen_in_training": agg.get("outlets_seen_in_training"),
        "articles_from_seen_outlets": agg.get("articles_from_seen_outlets"), "report": report,
    }


def file_link(path: str) -> str:
    """A URL for a file under the output root: a local path as a file:// URL (absolute), an object-store
    or http(s) URL as it is."""
    if "://" in path:
        return path
    # parentheses encoded too, so the URL can stand in a markdown link
    return pathlib.Path(os.path.abspath(path)).as_uri().replace("(", "%28").replace(")", "%29")


def report_links(report: dict) -> list[tuple[str, str]]:
    """(label, URL) of each report file the night wrote."""
    return [(label, file_link(report[key])) for key, label in REPORT_LINKS if report.get(key)]


def _seen_text(seen: int | None) -> str:
    if seen is None:
        return "not known (the model directory does not record its training outlets)"
    return f"{seen} (their positions are in-sample: marked seen in the table and chart)"


def summary_markdown(s: dict) -> str:
    return "\n".join([
        f"# score-corpus {s['run_date']}", "",
        "| | |", "|---|---|",
        f"| model id | `{s['model_id']}` |", f"| model directory | `{s['model_dir']}` |",
        f"| files scored tonight | {s['files']} in {s['shards']} shard(s), fan-out `{s['fan_out']}` |",
        f"| articles in | {s['input_rows']:,} |", f"| scored | {s['scored_rows']:,} |",
        f"| quarantined | {s['quarantined_rows']:,} |",
        f"| throughput | {s['articles_per_s']:,} articles/s per shard |", f"| wall time | {s['seconds']} s |",
        f"| articles aggregated | {s['aggregated_articles']:,} over {s['outlets']} outlets |",
        f"| outlets seen in training | {_seen_text(s.get('outlets_seen_in_training'))} |",
        f"| scores | `{s['scores']}` |", f"| aggregates | `{s['aggregates']}` |",
        *[f"| {label} | [{os.path.basename(url)}]({url}) |" for label, url in report_links(s["report"])],
    ])


def publish_night(summary: dict, agg: dict, report: dict) -> None:
    """Table of per-outlet aggregates, markdown summary (with links to the report files) and a link to
    the chart as artifacts of the current run."""
    create_table_artifact(aggregate_rows(agg["output_path"]), key="outlet-aggregates",
                          description=f"per-outlet aggregates {summary['run_date']}, model {summary['model_id']}")
    create_markdown_artifact(summary_markdown(summary), key="score-corpus-summary",
                             description=f"night {summary['run_date']}")
    chart = report.get("outlet_chart")
    if chart:  # a link to the PNG under the output root, not the image itself
        create_link_artifact(file_link(chart), link_text=f"outlet chart {summary['run_date']}", key="outlet-chart",
                             description=f"per-outlet mean bias score, model {summary['model_id']} ({chart})")


def console_summary(s: dict, top: int = 15) -> str:
    """Where everything landed and the top of the per-outlet table, for a terminal."""
    rows = aggregate_rows(s["aggregates"])[:top]
    lines = [
        "", f"score-corpus {s['run_date']}: {s['input_rows']:,} articles in, {s['scored_rows']:,} scored, "
        f"{s['quarantined_rows']:,} quarantined ({s['articles_per_s']} articles/s), model {s['model_id']}",
        f"  scores:     {s['scores']}", f"  quarantine: {s['quarantine']}",
        f"  aggregates: {s['aggregates']}", f"  chart:      {s['report'].get('outlet_chart')}",
    ]
    if not s["files"]:
        lines.append("  (no unscored files this time: the table covers every article this model scored before)")
    if s["report"].get("table"):
        lines.append(f"  table:      {s['report']['table']}")
    unseen = s["report"].get("unseen")
    if unseen:
        figures = (f"Spearman {unseen['spearman']:.2f}, outlet accuracy {unseen['accuracy_fitted']:.2f}, "
                   if unseen["outlets"] >= 2 else f"no outlet with {unseen['min_articles']}+ articles to rank, ")
        lines.append(f"  unseen:     {s['report']['unseen_chart']} (outlets the model never saw, out of fold: "
                     f"{figures}{unseen['level']:.0%} sets cover {unseen['coverage']:.2f})")
    seen = s.get("outlets_seen_in_training")
    if seen:
        lines.append(f"  in-sample:  {seen} outlet(s) tonight were in the model's training data (marked seen)")
    if not top:
        return "\n".join(lines)
    lines += ["", f"{'outlet':<36} {'n':>6} {'mean bias':>9} {'95% CI':>17}  label", "-" * 78]
    for r in rows:
        ci = (f"[{r['ci95_low']:+.3f}, {r['ci95_high']:+.3f}]" if r["ci95_low"] is not None else "")
        lines.append(f"{r['outlet'][:36]:<36} {r['n_articles']:>6} {r['mean_bias_score']:>+9.3f} {ci:>17}  "
                     f"{r['outlet_label']}{' (low n)' if r['low_n'] else ''}"
                     f"{' (seen)' if r.get('seen_in_training') or r.get('domain_seen_in_training') else ''}")
    return "\n".join(lines)
