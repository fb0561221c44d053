"""`report`: outlet chart, trend chart and markdown table from `aggregate`'s output (never imports torch)."""

from __future__ import annotations

import json
import logging

import click

from ..cli import dataclass_options, run_command
from ..config import ReportConfig
from ._command import Command

log = logging.getLogger(__name__)


@click.command("report", cls=Command)
@dataclass_options(ReportConfig, required=("aggregates", "output"), flags={"outlets": ("--outlet",)})
def command(**values) -> None:
    """Write outlets.png (outlets left to right with 95% intervals), trend.png and summary.md; with --model,
    also unseen.png and unseen.md (how the model places outlets it never saw, from its out-of-fold scores)."""
    run_command(_report, values)


def _report(values: dict) -> None:
    from ..analysis.report import write_report
    from ..cli import build_config

    cfg = build_config(ReportConfig, values)
    paths = write_report(cfg.aggregates, cfg.output, cfg.outlets or None, max_outlets=cfg.max_outlets, dpi=cfg.dpi,
                         axis=cfg.axis, model_dir=cfg.model)
    for note in paths.notes:
        log.warning(note)
    click.echo(json.dumps({k: v for k, v in paths.to_dict().items() if k != "notes"}))
