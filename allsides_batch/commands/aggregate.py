"""`aggregate`: per-outlet, per-window statistics over the scorer's output (polars; never imports torch)."""

from __future__ import annotations

import json
import logging

import click

from ..cli import build_config, dataclass_options, run_command
from ..config import AggregateConfig
from ._command import Command

log = logging.getLogger(__name__)


@click.command("aggregate", cls=Command)
@dataclass_options(AggregateConfig, required=("scores", "output"))
def command(**values) -> None:
    """Aggregate article scores per outlet (and day/week/month): mean, 95% interval, shares, trend."""
    run_command(_aggregate, values)


def _aggregate(values: dict) -> None:
    from ..analysis.aggregate import outlet_aggregates

    summary = outlet_aggregates(build_config(AggregateConfig, values))
    for note in summary.notes:
        log.warning(note)
    click.echo(json.dumps({k: v for k, v in summary.to_dict().items() if k not in ("notes", "ci_method")}))
