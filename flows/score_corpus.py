"""Flows `score-corpus` (one night: find unscored files → shards → score → aggregate → report) and
`score-shard` (one shard of files, the unit a GPU worker takes).

Tasks pass paths and small summaries, never tables or models; big results stay in the output root,
not in Prefect's result storage. Storage steps retry with backoff (a flaky mount or object store
recovers); scoring does not retry by itself: a shard is exactly-once per file (the scorer's
manifest), so the safe recovery is simply to run it again, which the parent or an operator does.

Fan-out: `local` scores shards one after another in this process (one GPU machine); `deployment`
starts one `score-shard/gpu` deployment run per shard, which any free worker of the `gpu` pool takes,
then waits for them all.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.tasks import exponential_backoff

from allsides_batch.errors import UserError
from flows import artifacts

DEFAULT_CORPUS = "../shared/data/allsides/articles.parquet"
SHARD_DEPLOYMENT = "score-shard/gpu"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _transient(task, task_run, state) -> bool:
    """Retry storage errors, never bad input: a UserError will fail the same way again."""
    return not isinstance(state.result(raise_on_failure=False), UserError)


storage_task = dict(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=5),
                    retry_jitter_factor=0.5, retry_condition_fn=_transient, timeout_seconds=1800,
                    persist_result=False)


def _local(path: str) -> str:
    """Absolute local paths, so shards running elsewhere (other cwd) name the same files; URLs as is."""
    return path if "://" in path else os.path.abspath(path)


def score_config(model_dir: str, files: list[str], output: str, run_id: str | None, options: dict):
    from allsides_batch.config import ScoreConfig

    return ScoreConfig(model=model_dir, input=files, output=output, run_id=run_id, **{"progress": False, **options})


@task(name="resolve-model", **storage_task)
def resolve_model_task(model: str, models_root: str) -> str:
    from allsides_batch.registry import resolve_model

    return resolve_model(model, models_root)


@task(name="find-unscored", **storage_task)
def find_unscored(model_dir: str, corpus: list[str], output: str, options: dict) -> dict:
    """Files the scorer's manifest has no entry for (this model, these settings), and the model id
    the scores will carry."""
    from allsides_batch.score import plan

    p = plan(score_config(model_dir, corpus, output, None, options))
    return {"files": p.files, "score_id": p.score_id, "skipped": p.skipped}


@task(name="score-shard", persist_result=False)
def score_shard_task(model_dir: str, files: list[str], output: str, run_id: str, options: dict) -> dict:
    from allsides_batch.score import score_corpus

    return score_corpus(score_config(model_dir, files, output, run_id, options), files=files).to_dict()


@task(name="aggregate", **storage_task)
def aggregate_task(scores: str, output: str, window: str, model_id: str, until: str | None,
                   min_articles: int) -> dict:
    from allsides_batch.aggregate import outlet_aggregates
    from allsides_batch.config import AggregateConfig

    cfg = AggregateConfig(scores=scores, output=output, window=window, model_id=model_id, until=until,
                          min_articles=min_articles)
    return outlet_aggregates(cfg).to_dict()


@task(name="report", **storage_task)
def report_task(aggregates: str, output: str) -> dict:
    from allsides_batch.report import write_report

    return write_report(aggregates, output).to_dict()


@flow(name="score-shard", log_prints=True, persist_result=False)
def score_shard_flow(files: list[str], model: str, output: str, run_id: str, options: dict | None = None) -> dict:
    """Score one shard of corpus files with one model directory into one output root. Safe to rerun:
    files already in the output's manifest for this model are skipped, never scored twice."""
    return score_shard_task(model, files, output, run_id, options or {})


def shards_of(files: list[str], shard_size: int) -> list[list[str]]:
    return [files[i:i + shard_size] for i in range(0, len(files), shard_size)]


def _run_date(value: str | None) -> str:
    if value is None:
        return dt.datetime.now(dt.timezone.utc).date().isoformat()
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError as exc:
        raise UserError(f"run_date {value!r} is not a date: use YYYY-MM-DD") from exc


@flow(name="score-corpus", log_prints=True, persist_result=False)
def score_corpus_flow(
    corpus: list[str] = [DEFAULT_CORPUS],  # noqa: B006 (Prefect parameters are copied per run)
    model: str = "latest",
    models_root: str = "models",
    output: str = "runs/nightly",
    run_date: str | None = None,
    window: Literal["day", "week", "month", "all"] = "all",
    shard_size: int = 1,
    fan_out: Literal["local", "deployment"] = "local",
    max_length: int | None = None,
    quantize: Literal["none", "int8"] = "none",
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto",
    device: str = "auto",
    batch_tokens: int | None = None,
    workers: int | None = None,
    min_articles: int = 20,
    shard_deployment: str = SHARD_DEPLOYMENT,
    shard_timeout_s: int = 6 * 3600,
    progress_bar: bool = False,
) -> dict:
    """One night: score every corpus file this model has not scored yet, aggregate per outlet, chart.

    `corpus` entries are files, directories or globs; `{run_date}` in them is replaced by the run's
    date, so a date-partitioned corpus needs no new parameters each night. Outputs land under
    `output`: scores/, quarantine/, _manifest/ and runs/ (shared by all nights, exactly-once per
    file), and nights/<run_date>/aggregates and nights/<run_date>/report. `progress_bar` shows the
    scorer's progress bar on stderr (for a terminal; worker logs are better without)."""
    log = get_run_logger()
    if shard_size < 1:
        raise UserError(f"shard_size must be >= 1, got {shard_size}")
    run_date = _run_date(run_date)
    corpus = [_local(c.replace("{run_date}", run_date)) for c in corpus]
    output = _local(output)
    options = {k: v for k, v in dict(max_length=max_length, quantize=quantize, precision=precision,
                                     device=device, batch_tokens=batch_tokens, workers=workers).items()
               if v is not None}
    shard_options = {**options, "progress": progress_bar}
    started = time.perf_counter()

    model_dir = resolve_model_task(model, _local(models_root))
    todo = find_unscored(model_dir, corpus, output, options)
    files, score_id = todo["files"], todo["score_id"]
    shards = shards_of(files, shard_size)
    log.info("model %s (score id %s): %d unscored file(s) in %d shard(s), %d already scored; fan-out %s",
             model_dir, score_id, len(files), len(shards), todo["skipped"], fan_out)

    from prefect.runtime import flow_run

    prefix = f"{run_date}-{(flow_run.id or 'local')[:8]}"
    run_ids = [f"{prefix}-shard{i:03d}" for i in range(len(shards))]
    progress = create_progress_artifact(0.0, key="score-corpus-progress",
                                        description=f"{len(shards)} shard(s) of {len(files)} file(s)")
    if fan_out == "local":
        shard_task = score_shard_task.with_options(timeout_seconds=shard_timeout_s)
        for i, (files_i, run_id) in enumerate(zip(shards, run_ids)):
            shard_task(model_dir, files_i, output, run_id, shard_options)
            update_progress_artifact(progress, 100.0 * (i + 1) / len(shards))
    else:
        run_shard_deployments(shard_deployment, shards, run_ids, model_dir, output, options, progress,
                              shard_timeout_s)
    update_progress_artifact(progress, 100.0)

    # Every file must be scored now; one that is not would be silently missing from tonight's table.
    left = find_unscored(model_dir, corpus, output, options)["files"]
    if left:
        raise RuntimeError(f"{len(left)} file(s) still unscored after all shards finished, e.g. {left[0]}; "
                           "rerun this night (already scored files are skipped)")

    night = os.path.join(output, "nights", run_date)
    # windows end at the night's date, so rerunning an old night does not pull in later articles;
    # `all` has no range (a range would drop the articles whose dates cannot be parsed)
    agg = aggregate_task(os.path.join(output, "scores"), os.path.join(night, "aggregates"), window, score_id,
                         None if window == "all" else run_date, min_articles)
    report = report_task(os.path.join(night, "aggregates"), os.path.join(night, "report"))
    shard_summaries = artifacts.read_run_summaries(output, run_ids)
    summary = artifacts.night_summary(run_date, score_id, model_dir, output, shard_summaries, agg, report,
                                      time.perf_counter() - started, fan_out, len(files))
    artifacts.publish_night(summary, agg, report)
    log.info(artifacts.console_summary(summary, top=0))  # the table itself is the outlet-aggregates artifact
    return summary


def run_shard_deployments(name: str, shards: list[list[str]], run_ids: list[str], model_dir: str, output: str,
                          options: dict, progress, timeout_s: int) -> None:
    """Start every shard as a deployment run (timeout=0: do not wait), then wait for all of them.
    Starting all first is what lets N workers take N shards at once."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    log = get_run_logger()
    runs = [run_deployment(name, parameters=dict(files=files, model=model_dir, output=output, run_id=run_id,
                                                 options=options),
                           flow_run_name=run_id, timeout=0)
            for files, run_id in zip(shards, run_ids)]
    log.info("started %d shard run(s) of %s", len(runs), name)
    pending = {r.id: r for r in runs}
    failed: list[str] = []
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} shard run(s) not finished after {timeout_s} s: "
                                   f"{', '.join(r.name for r in pending.values())}")
            time.sleep(2.0)
            for run_id in list(pending):
                state = client.read_flow_run(run_id).state
                if state is not None and state.type.value in FINAL:
                    run = pending.pop(run_id)
                    if state.type.value != "COMPLETED":
                        failed.append(f"{run.name} ({state.type.value.lower()}: {state.message})")
                    update_progress_artifact(progress, 100.0 * (len(runs) - len(pending)) / len(runs))
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(runs)} shard run(s) did not complete: {'; '.join(failed)}. "
                           "Rerun the night: scored files are skipped, so only the missing ones run again")


if __name__ == "__main__":
    score_corpus_flow()
