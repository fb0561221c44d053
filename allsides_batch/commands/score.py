"""`score`: stream Parquet corpora through a classifier into per-article scores, exactly once."""

from __future__ import annotations

import json
import logging

import click

from ..cli import build_config, dataclass_options, run_command
from ..config import ScoreConfig
from ._command import Command

log = logging.getLogger(__name__)


@click.command("score", cls=Command)
@dataclass_options(ScoreConfig, required=("model", "input", "output"), skip=("label_column",))  # no labels here
def command(**values) -> None:
    """Score every article of Parquet corpora left/center/right; files already scored are skipped.

    An unreadable file (not Parquet, damaged) is quarantined as one row and the run goes on; when every file
    read was unreadable, or more than --max-unreadable-files of them, the run still commits what it scored,
    prints its summary, then exits 2 with one line naming the count and the quarantine directory."""
    run_command(_score, values)


def _score(values: dict) -> None:
    from ..scoring import check_unreadable, score_corpus

    cfg = build_config(ScoreConfig, values)
    s = score_corpus(cfg)
    log.info(f"scored {s.scored_rows} + quarantined {s.quarantined_rows} = {s.input_rows} input rows "
             f"from {s.files_scored} file(s) ({s.files_skipped} already done) in {s.seconds:.1f} s, "
             f"{s.articles_per_s:.1f} articles/s; model_id {s.model_id}; output {s.output}")
    r = s.reconciled
    if r.get("retired_files") or r.get("orphan_parts_removed"):
        log.info(f"retired the scores of {r['retired_files']} file(s) ({r['retired_rows']} rows) whose input was "
                 f"deleted or rewritten; removed {r['orphan_parts_removed']} part(s) left by killed runs")
    if s.files_same_content:
        log.info(f"{s.files_same_content} input path(s) hold the same bytes as another input: scored once")
    for url in s.files_changed_during_run:
        log.warning(f"{url} changed while it was scored; not committed, the next run scores it")
    if s.int8_label_agreement is not None:
        log.info(f"int8 label agreement with fp32: {s.int8_label_agreement:.1%} on {s.int8_rows_checked} articles")
    click.echo(json.dumps(s.to_dict()))
    check_unreadable([s.to_dict()], cfg.max_unreadable_files)
