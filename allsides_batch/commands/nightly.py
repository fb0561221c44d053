"""`nightly`: the nightly job on this machine, as `python -m allsides_batch.flows` runs it
(allsides_batch/flows/__main__.py's nightly): train and publish models/latest if absent, then the
score-corpus flow on Prefect's ephemeral local server. Prefect is imported only when the job runs."""

from __future__ import annotations

import logging

import click

# allsides_batch/flows/__main__.py imports nothing from Prefect at module level; its defaults are the job's own.
from allsides_batch.flows.__main__ import DEMO, default_kind

from ..cli import run_command
from ..config import MAX_UNREADABLE_FILES
from ._command import Command, echo_result

log = logging.getLogger(__name__)


@click.command("nightly", cls=Command)
@click.option("--corpus", multiple=True,
              help="Parquet file(s), directories or globs to score (default: the shared AllSides articles)")
@click.option("--output", default="runs/nightly", show_default=True,
              help="output root: scores shared by all nights, nights/<date>/aggregates and report")
@click.option("--models-root", default="models", show_default=True,
              help="published models and the latest pointer")
@click.option("--train-data", multiple=True,
              help="labelled Parquet to train models/latest on when there is none (default: the shared AllSides "
                   "articles, whatever --corpus is)")
@click.option("--kind", type=click.Choice(["linear", "transformer", "ensemble"]), default=default_kind(),
              show_default=True, help="model kind to train when no model exists (train's default)")
@click.option("--base-model", default=None,
              help="encoder to fine-tune for --kind transformer/ensemble (default: the pretrained MiniLM-L6)")
@click.option("--train-steps", type=int, default=DEMO["train_steps"], show_default=True,
              help="training budget of a transformer when training")
@click.option("--max-length", type=int, default=DEMO["max_length"], show_default=True,
              help="tokens per article (transformer)")
@click.option("--quantize", type=click.Choice(["none", "int8"]), default=None,
              help="CPU scoring weights of a transformer (default int8; a linear model has none)")
@click.option("--retrain", is_flag=True, help="train and publish a new model even if latest exists")
@click.option("--allow-below-chance", is_flag=True,
              help="publish a model trained here even if its validation macro-F1 is at or below chance (1/3)")
@click.option("--run-date", default=None, help="YYYY-MM-DD (default: today, UTC)")
@click.option("--max-unreadable-files", type=click.FloatRange(0.0, 1.0), default=MAX_UNREADABLE_FILES,
              show_default=True, help="fail the night (exit 2, after committing what was scored) when more than this "
                                      "share of the corpus files it read was unreadable; a night where all were "
                                      "always fails")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="progress bars while training and scoring")
def command(**values) -> None:
    """Run the nightly job here: train models/latest if absent, then score every corpus file this model has
    not scored, aggregate per outlet and chart, on Prefect's ephemeral local server (what `make run` does).
    Prints the night's summary as one JSON object on stdout; the per-outlet table and where to look next
    go to stderr."""
    run_command(_nightly, values)


def _nightly(values: dict) -> None:
    from ..errors import UserError

    try:
        from allsides_batch.flows.__main__ import next_steps, nightly, quiet_user_errors
        from allsides_batch.flows.artifacts import console_summary
    except ModuleNotFoundError as exc:
        raise UserError(f"{exc}: nightly runs Prefect flows; pip install -e '.[flows]'") from exc
    with quiet_user_errors():
        night = nightly(**{**values, "corpus": list(values["corpus"]) or None,
                           "train_data": list(values["train_data"]) or None})
    log.info(console_summary(night))
    log.info(next_steps(night, values["output"]))
    echo_result(night)
