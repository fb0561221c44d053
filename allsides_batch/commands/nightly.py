"""`nightly`: the nightly job on this machine, as `python -m allsides_batch.flows` runs it
(allsides_batch/flows/__main__.py's nightly): train and publish models/latest if absent, then the score-corpus
flow on Prefect's ephemeral local server. Its options are NightConfig's fields (allsides_batch/config.py), as
are `python -m allsides_batch.flows`'s. Prefect is imported only when the job runs."""

from __future__ import annotations

import logging

import click

from ..cli import build_config, dataclass_options, run_command
from ..config import NightConfig
from ._command import Command, echo_result

log = logging.getLogger(__name__)


@click.command("nightly", cls=Command)
@dataclass_options(NightConfig, config_file=False)
def command(**values) -> None:
    """Run the nightly job here: train models/latest if absent, then score every corpus file this model has
    not scored, aggregate per outlet and chart, on Prefect's ephemeral local server (what `make run` does).
    Prints the night's summary as one JSON object on stdout; the per-outlet table and where to look next
    go to stderr."""
    run_command(_nightly, values)


def _nightly(values: dict) -> None:
    from ..errors import UserError

    cfg = build_config(NightConfig, values)
    try:
        from allsides_batch.flows.__main__ import next_steps, nightly, quiet_user_errors
        from allsides_batch.flows.artifacts import console_summary
    except ModuleNotFoundError as exc:
        raise UserError(f"{exc}: nightly runs Prefect flows; pip install -e '.[flows]'") from exc
    with quiet_user_errors():
        night = nightly(cfg)
    log.info(console_summary(night))
    log.info(next_steps(night, cfg.output))
    echo_result(night)
