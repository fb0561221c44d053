"""`python -m allsides_batch <command>`: one CLI, each subcommand a thin front door onto the library."""

from __future__ import annotations

import sys

import click

from . import __version__
from .cli import LazyGroup, configure_logging, logging_options, resolve_log_level

COMMANDS = {
    "train": ("allsides_batch.commands.train", "Train a model to label articles left/center/right."),
    "cv": ("allsides_batch.commands.cv", "Outlet-grouped K-fold cross-validation of a training recipe."),
    "score": ("allsides_batch.commands.score", "Score Parquet corpora article by article, exactly once."),
    "aggregate": ("allsides_batch.commands.aggregate", "Per-outlet (and per-window) statistics of article scores."),
    "evaluate": ("allsides_batch.commands.evaluate", "Accuracy, macro-F1, calibration and outlet-level agreement."),
    "report": ("allsides_batch.commands.report", "Outlet chart, trend chart and markdown table from aggregates."),
    "explain": ("allsides_batch.commands.explain", "The terms that place an article or an outlet (linear models)."),
    "nightly": ("allsides_batch.commands.nightly", "The nightly job here: train models/latest if absent, then "
                                                   "score, aggregate and chart on Prefect's local server."),
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"],
                                                                       "max_content_width": 110})
@click.version_option(__version__, prog_name="allsides-batch")
@logging_options
@click.pass_context
def app(ctx: click.Context, log_level: str, verbose: bool, quiet: bool) -> None:
    """Score the political slant of news articles at scale. Progress and notes go to stderr as log
    records, results to stdout."""
    ctx.call_on_close(configure_logging(resolve_log_level(verbose, quiet, log_level)))


def main() -> None:
    import os

    from .runtime.shutdown import install_signal_handlers

    install_signal_handlers()  # SIGTERM / Ctrl-C end the command and every process it started

    # the console script is `allsides-batch`; `python -m allsides_batch` names itself
    app(prog_name="allsides-batch" if os.path.basename(sys.argv[0]) == "allsides-batch" else "python -m allsides_batch")


if __name__ == "__main__":
    main()
