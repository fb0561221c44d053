"""Flows `score-corpus` (one night: find unscored files → shards → score → aggregate → report) and
`score-shard` (one shard of files, the unit a GPU worker takes).

Tasks pass paths and small summaries, never tables or models; big results stay in the output root,
not in Prefect's result storage. Storage steps retry with backoff (a flaky mount or object store
recovers). A shard retries too (twice, after 1 and 5 minutes): it is exactly-once per file through
the scorer's manifest, so an attempt after a failure only scores the files the failed one did not
finish. Neither retries bad input (a UserError fails the same way again), and a shard attempt that
ran out of time is not retried either (it already used the night's time).

Fan-out: `local` scores shards one after another in this process (one GPU machine); `deployment`
starts one `score-shard/gpu` deployment run per shard, which any free worker of the `gpu` pool takes,
then waits for them all. A night that stops early (its deadline passed, an error, interrupted or
cancelled) cancels the shard runs it is still waiting for.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, field
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.states import Cancelling
from prefect.tasks import exponential_backoff

from allsides_batch.config import MAX_UNREADABLE_FILES, MODELS_ROOT, NIGHTLY_OUTPUT, OUTLET_MIN_ARTICLES, SHARED_CORPUS
from allsides_batch.errors import UserError
from allsides_batch.flows import artifacts
from allsides_batch.storage.layout import night_aggregates, night_report, scores_root

SHARD_DEPLOYMENT = "score-shard/gpu"
SHARD_RETRIES = 2
SHARD_RETRY_DELAYS_S = [60, 300]  # first retry after a minute, the second after five
SHARD_TIMEOUT_S = 6 * 3600  # one attempt at one shard
# A shard run started by the parent gets this much more than the parent's deadline as its own timeout:
# the parent's deadline (which cancels its shards) is what ends a late night; the shard's own timeout
# is the backstop for a shard whose parent is gone.
SHARD_TIMEOUT_GRACE_S = 300


def _transient(task, task_run, state) -> bool:
    """Retry storage errors, never bad input: a UserError will fail the same way again."""
    return not isinstance(state.result(raise_on_failure=False), UserError)


def _retryable_shard(task, task_run, state) -> bool:
    """Retry a shard that failed for a passing reason (storage, a lost worker process, a CUDA error);
    never bad input (a UserError fails the same way again) nor an attempt that timed out (it already
    used all the time the shard had)."""
    return not isinstance(state.result(raise_on_failure=False), (UserError, TimeoutError))


storage_task = dict(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=5),
                    retry_jitter_factor=0.5, retry_condition_fn=_transient, timeout_seconds=1800,
                    persist_result=False)


def _local(path: str) -> str:
    """Absolute local paths, so shards running elsewhere (other cwd) name the same files; URLs as is."""
    return path if "://" in path else os.path.abspath(path)


def as_path_list(value: str | list[str] | tuple[str, ...], name: str) -> list[str]:
    """A flow parameter that takes one path or a list of paths, as a list (a single path from
    `--param corpus=/data/today` arrives as a string)."""
    paths = [value] if isinstance(value, str) else list(value or [])
    if not paths or not all(isinstance(p, str) and p for p in paths):
        raise UserError(f"{name} must be a path or a list of paths, got {value!r}")
    return paths


def score_config(model_dir: str, files: list[str], output: str, run_id: str | None, options: dict):
    from allsides_batch.config import ScoreConfig

    return ScoreConfig(model=model_dir, input=files, output=output, run_id=run_id, **{"progress": False, **options})


@task(name="resolve-model", **storage_task)
def resolve_model_task(model: str, models_root: str) -> str:
    from allsides_batch.models.registry import resolve_model

    return resolve_model(model, models_root)


@task(name="find-unscored", **storage_task)
def find_unscored(model_dir: str, corpus: list[str], output: str, options: dict) -> dict:
    """Files the scorer's manifest has no entry for (this model, these settings), and the model id
    the scores will carry."""
    from allsides_batch.scoring import plan

    p = plan(score_config(model_dir, corpus, output, None, options))
    return {"files": p.files, "score_id": p.score_id, "skipped": p.skipped}


@task(name="reconcile", **storage_task)
def reconcile_task(model_dir: str, corpus: list[str], output: str, options: dict) -> dict:
    """After every shard: the files still unscored (`left`; nothing else is done while there are any), else
    retire the scores of inputs deleted or rewritten since they were scored and remove parts left by killed
    shard runs, so the output equals the corpus as it is now. One plan serves both."""
    from allsides_batch.scoring import plan
    from allsides_batch.storage.corpus import reconcile

    p = plan(score_config(model_dir, corpus, output, None, options))
    if p.files:
        return {"left": p.files}
    return {"left": [], **reconcile(output, p.corpus, prune_orphans=True).to_dict()}


@task(name="score-shard", persist_result=False, retries=SHARD_RETRIES, retry_delay_seconds=SHARD_RETRY_DELAYS_S,
      retry_jitter_factor=0.2, retry_condition_fn=_retryable_shard, timeout_seconds=SHARD_TIMEOUT_S)
def score_shard_task(model_dir: str, files: list[str], output: str, run_id: str, options: dict) -> dict:
    from allsides_batch.scoring import score_corpus

    return score_corpus(score_config(model_dir, files, output, run_id, options), files=files).to_dict()


@task(name="aggregate", **storage_task)
def aggregate_task(scores: str, output: str, window: str, model_id: str, until: str | None,
                   min_articles: int, model_dir: str | None = None) -> dict:
    from allsides_batch.analysis.aggregate import outlet_aggregates
    from allsides_batch.config import AggregateConfig

    cfg = AggregateConfig(scores=scores, output=output, window=window, model_id=model_id, until=until,
                          min_articles=min_articles, model=model_dir)
    return outlet_aggregates(cfg).to_dict()


@task(name="report", **storage_task)
def report_task(aggregates: str, output: str, model_dir: str | None = None, corpus: list[str] | None = None,
                top_outlets: int = 6) -> dict:
    """The night's report; with a linear model (or ensemble) and the corpus, also terms.md: why its
    `top_outlets` largest outlets sit where they do."""
    from allsides_batch.analysis.explain import write_outlet_terms
    from allsides_batch.analysis.report import write_report

    paths = write_report(aggregates, output, model_dir=model_dir).to_dict()
    if model_dir and corpus:
        paths["terms"] = write_outlet_terms(aggregates, output, model_dir, corpus, top_outlets)
    return paths


@flow(name="score-shard", log_prints=True, persist_result=False)
def score_shard_flow(files: list[str],  # noqa: PLR0913 (Prefect parameters, which a deployment run sets by name)
                     model: str, output: str, run_id: str, options: dict | None = None,
                     timeout_s: int = SHARD_TIMEOUT_S, retry_delays_s: list[float] | None = None) -> dict:
    """Score one shard of corpus files with one model directory into one output root. Safe to rerun:
    files already in the output's manifest for this model are skipped, never scored twice.

    An attempt that fails for a passing reason is retried (SHARD_RETRIES times, after `retry_delays_s`,
    default 60 s then 300 s); bad input is not. `timeout_s` bounds each attempt (the parent sets it)."""
    if timeout_s <= 0:
        raise UserError(f"timeout_s must be > 0 seconds, got {timeout_s}")
    shard = score_shard_task.with_options(timeout_seconds=timeout_s,
                                          **({"retry_delay_seconds": retry_delays_s} if retry_delays_s else {}))
    return shard(model, files, output, run_id, options or {})


def shards_of(files: list[str], shard_size: int) -> list[list[str]]:
    return [files[i:i + shard_size] for i in range(0, len(files), shard_size)]


def _run_date(value: str | None) -> str:
    if value is None:
        return dt.datetime.now(dt.timezone.utc).date().isoformat()
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError as exc:
        raise UserError(f"run_date {value!r} is not a date: use YYYY-MM-DD") from exc


@dataclass
class Night:
    """One score-corpus run's work once its parameters are resolved: the date, the corpus files and output
    root as absolute paths, the scorer's options, then the model and the files it has not scored yet."""

    run_date: str
    corpus: list[str]
    output: str
    options: dict  # ScoreConfig fields set by the flow's parameters
    model_dir: str = ""
    score_id: str = ""
    files: list[str] = field(default_factory=list)


@dataclass
class FanOut:
    """How a night scores its shards: `local` one after another here, or `deployment` one run each of
    `deployment`; each shard within `timeout_s` (deployment: all of them, from the start)."""

    mode: str
    deployment: str
    timeout_s: int
    progress_bar: bool


@flow(name="score-corpus", log_prints=True, persist_result=False)
def score_corpus_flow(  # noqa: PLR0913 (each is a Prefect parameter: typed, validated, set per deployment or run)
    corpus: str | list[str] = [SHARED_CORPUS],  # noqa: B006 (Prefect parameters are copied per run)
    model: str = "latest",
    models_root: str = MODELS_ROOT,
    output: str = NIGHTLY_OUTPUT,
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
    min_articles: int = OUTLET_MIN_ARTICLES,
    shard_deployment: str = SHARD_DEPLOYMENT,
    shard_timeout_s: int = SHARD_TIMEOUT_S,
    progress_bar: bool = False,
    max_unreadable_files: float = MAX_UNREADABLE_FILES,
) -> dict:
    """One night: score every corpus file this model has not scored yet, aggregate per outlet, chart.

    `corpus` is one path or a list of them (`--param corpus=/data/today`, or
    `--param 'corpus=["/data/a", "/data/b"]'`): files, directories or globs; `{run_date}` in them is
    replaced by the run's date, so a date-partitioned corpus needs no new parameters each night.
    Outputs land under `output` as allsides_batch/storage/layout.py lays them out: the scores, quarantine,
    manifest and run summaries (shared by all nights, exactly-once per file), and
    nights/<run_date>/aggregates and nights/<run_date>/report. `progress_bar` shows the scorer's
    progress bar on stderr (for a terminal; worker logs are better without). A night where every file it
    read was unreadable, or more than `max_unreadable_files` of them (score --max-unreadable-files), fails
    with a UserError once every shard is committed, before the aggregates."""
    if shard_size < 1:
        raise UserError(f"shard_size must be >= 1, got {shard_size}")
    options = dict(max_length=max_length, quantize=quantize, precision=precision, device=device,
                   batch_tokens=batch_tokens, workers=workers)
    night = resolve_night(corpus, output, run_date, options)
    started = time.perf_counter()
    skipped = find_work(night, model, models_root)
    shards = shards_of(night.files, shard_size)
    log = get_run_logger()
    log.info("model %s (score id %s): %d unscored file(s) in %d shard(s), %d already scored; fan-out %s",
             night.model_dir, night.score_id, len(night.files), len(shards), skipped, fan_out)
    run_ids = score_shards(night, shards, FanOut(fan_out, shard_deployment, shard_timeout_s, progress_bar))
    shard_summaries = check_all_scored(night, run_ids, max_unreadable_files)
    agg, report = aggregate_and_report(night, window, min_articles)
    summary = artifacts.night_summary(night.run_date, night.score_id, night.model_dir, night.output, shard_summaries,
                                      agg, report, time.perf_counter() - started, fan_out, len(night.files))
    artifacts.publish_night(summary, agg, report)
    log.info(artifacts.console_summary(summary, top=0))  # the table itself is the outlet-aggregates artifact
    return summary


def resolve_night(corpus: str | list[str], output: str, run_date: str | None, options: dict) -> Night:
    """The night's date (today, UTC, by default), its corpus with `{run_date}` filled in, and absolute paths,
    so shards running elsewhere name the same files; options left unset (None) keep ScoreConfig's defaults."""
    date = _run_date(run_date)
    return Night(run_date=date, corpus=[_local(c.replace("{run_date}", date)) for c in as_path_list(corpus, "corpus")],
                 output=_local(output), options={k: v for k, v in options.items() if v is not None})


def find_work(night: Night, model: str, models_root: str) -> int:
    """Resolve the model and find the corpus files it has not scored with these options (night.files);
    returns how many it has scored already."""
    night.model_dir = resolve_model_task(model, _local(models_root))
    todo = find_unscored(night.model_dir, night.corpus, night.output, night.options)
    night.files, night.score_id = todo["files"], todo["score_id"]
    return todo["skipped"]


def score_shards(night: Night, shards: list[list[str]], fan: FanOut) -> list[str]:
    """Score every shard, here one after another (`local`) or as deployment runs; returns their run ids. A
    progress artifact follows the shards done."""
    from prefect.runtime import flow_run

    prefix = f"{night.run_date}-{(flow_run.id or 'local')[:8]}"
    run_ids = [f"{prefix}-shard{i:03d}" for i in range(len(shards))]
    progress = create_progress_artifact(0.0, key="score-corpus-progress",
                                        description=f"{len(shards)} shard(s) of {len(night.files)} file(s)")
    if fan.mode == "local":
        shard_task = score_shard_task.with_options(timeout_seconds=fan.timeout_s)
        for i, (files_i, run_id) in enumerate(zip(shards, run_ids)):
            shard_task(night.model_dir, files_i, night.output, run_id, {**night.options, "progress": fan.progress_bar})
            update_progress_artifact(progress, 100.0 * (i + 1) / len(shards))
    else:
        run_shard_deployments(fan, shards, run_ids, night, progress)
    update_progress_artifact(progress, 100.0)
    return run_ids


def check_all_scored(night: Night, run_ids: list[str], max_unreadable_files: float) -> list[dict]:
    """After the shards: every file must be scored now (one that is not would be silently missing from
    tonight's table), the output made to equal the corpus as it is now, and the share of unreadable files
    within bounds. Returns the shards' run summaries."""
    from allsides_batch.scoring import check_unreadable

    reconciled = reconcile_task(night.model_dir, night.corpus, night.output, night.options)
    left = reconciled["left"]
    if left:
        raise RuntimeError(f"{len(left)} file(s) still unscored after all shards finished, e.g. {left[0]}; "
                           "rerun this night (already scored files are skipped)")
    if reconciled["retired_files"] or reconciled["orphan_parts_removed"]:
        get_run_logger().info("retired the scores of %d input file(s) deleted or rewritten since; removed %d "
                              "leftover part(s)", reconciled["retired_files"], reconciled["orphan_parts_removed"])
    shard_summaries = artifacts.read_run_summaries(night.output, run_ids)
    check_unreadable(shard_summaries, max_unreadable_files)
    return shard_summaries


def aggregate_and_report(night: Night, window: str, min_articles: int) -> tuple[dict, dict]:
    """The night's per-outlet aggregates and its report (chart, table, terms)."""
    aggregates = night_aggregates(night.output, night.run_date)
    # windows end at the night's date, so rerunning an old night does not pull in later articles;
    # `all` has no range (a range would drop the articles whose dates cannot be parsed)
    agg = aggregate_task(scores_root(night.output), aggregates, window, night.score_id,
                         None if window == "all" else night.run_date, min_articles, night.model_dir)
    if agg.get("outlets_seen_in_training"):
        get_run_logger().warning(
            "%d of %d outlets (%d articles) tonight are ones the model was trained on: their positions are "
            "in-sample, marked seen_in_training", agg["outlets_seen_in_training"], agg["outlets"],
            agg["articles_from_seen_outlets"])
    report = report_task(aggregates, night_report(night.output, night.run_date), night.model_dir, night.corpus)
    return agg, report


def run_shard_deployments(fan: FanOut, shards: list[list[str]], run_ids: list[str], night: Night, progress) -> None:
    """Start every shard as a deployment run (timeout=0: do not wait), then wait for all of them.
    Starting all first is what lets N workers take N shards at once.

    A shard that fails does not stop its siblings: they finish and their files stay scored, so the
    rerun of the night redoes only the failed shard's files, and the error names every shard that
    failed, not just the first. When this parent stops early instead (`fan.timeout_s` after the start
    passed with shards unfinished, an error here, an interrupt, or the parent run being cancelled),
    it cancels every shard run still pending, so none keeps a GPU busy for a night that has ended;
    the error says how many it cancelled."""
    from prefect.deployments import run_deployment

    log = get_run_logger()
    name, timeout_s = fan.deployment, fan.timeout_s
    deadline = time.monotonic() + timeout_s
    pending: dict = {}
    failed: list[str] = []
    started = 0
    try:
        for files, run_id in zip(shards, run_ids):
            run = run_deployment(name, parameters=dict(files=files, model=night.model_dir, output=night.output,
                                                       run_id=run_id, options=night.options,
                                                       timeout_s=timeout_s + SHARD_TIMEOUT_GRACE_S),
                                 flow_run_name=run_id, timeout=0)
            pending[run.id] = run
            started += 1
        log.info("started %d shard run(s) of %s", started, name)
        for run, state in _as_finished(pending, deadline, timeout_s):
            if not state.is_completed():
                failed.append(f"{run.name} ({state.type.value.lower()}: {state.message})")
                log.warning("shard run %s ended %s: %s; waiting for the %d other(s) still running",
                            run.name, state.type.value, state.message, len(pending))
            update_progress_artifact(progress, 100.0 * (started - len(pending)) / len(shards))
    except BaseException as exc:
        _stop_early(exc, pending, started, len(shards))
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(shards)} shard run(s) did not complete: {'; '.join(failed)}. "
                           "Rerun the night: scored files are skipped, so only the missing ones run again")


def _as_finished(pending: dict, deadline: float, timeout_s: int):
    """(flow run, final state) of each run in `pending` as it finishes, removing it from `pending`, through
    Prefect's own waiting on flow runs (the server's events); a TimeoutError when `deadline` passes first."""
    from prefect.futures import PrefectFlowRunFuture, as_completed

    futures = [PrefectFlowRunFuture(run_id) for run_id in pending]
    try:
        for future in as_completed(futures, timeout=max(deadline - time.monotonic(), 0.001)):
            future.wait()  # an event can arrive before the API shows the final state: wait reads until it does
            yield pending.pop(future.flow_run_id), future.state
    except TimeoutError:
        raise TimeoutError(f"{len(pending)} shard run(s) not finished after {timeout_s} s: "
                           f"{', '.join(r.name for r in pending.values())}") from None


def _stop_early(exc: BaseException, pending: dict, started: int, n_shards: int) -> None:
    """Cancel the shard runs still pending and raise what stopped the night, saying how many were cancelled."""
    log = get_run_logger()
    why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    cancelled = cancel_flow_runs(list(pending.values()), f"the night {_this_run_name()} stopped early ({why})")
    names = ", ".join(cancelled[:10]) + (f", and {len(cancelled) - 10} more" if len(cancelled) > 10 else "")
    note = f"; cancelled {len(cancelled)} of the {len(pending)} shard run(s) still pending" + (
        f" ({names})" if cancelled else "")
    log.error("stopping early (%s)%s", why, note)
    if isinstance(exc, TimeoutError):
        raise TimeoutError(f"{exc}{note}") from None
    if isinstance(exc, Exception):
        raise RuntimeError(f"shard fan-out failed after starting {started} of {n_shards} shard run(s): "
                           f"{why}{note}") from exc
    raise exc  # interrupted or cancelled: stop as asked, with the children cancelled


def _this_run_name() -> str:
    from prefect.runtime import flow_run

    return flow_run.name or "(no flow run)"


def cancel_flow_runs(runs: list, reason: str) -> list[str]:
    """Ask the server to cancel these flow runs; returns the names of those now Cancelling or Cancelled.

    The state is proposed, not forced: one still Scheduled (no worker took it) becomes Cancelled at once,
    one a worker has started becomes Cancelling and its worker stops the process, and one that finished
    meanwhile keeps its final state (the server refuses the change) and is not counted."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    log = get_run_logger()
    cancelled: list[str] = []
    if not runs:
        return cancelled
    with get_client(sync_client=True) as client:
        for run in runs:
            try:
                result = client.set_flow_run_state(run.id, Cancelling(message=reason))
            except Exception as exc:  # noqa: BLE001 - cancel the others; the one left is named in the log
                log.warning("could not cancel flow run %s (%s): %s: %s", run.name, run.id, type(exc).__name__, exc)
                continue
            if result.state is not None and result.state.type in (StateType.CANCELLING, StateType.CANCELLED):
                cancelled.append(run.name)
            else:
                log.info("flow run %s not cancelled (%s): %s", run.name, result.status.value,
                         getattr(result.details, "reason", None) or "it had already finished")
    return cancelled


if __name__ == "__main__":
    score_corpus_flow()
