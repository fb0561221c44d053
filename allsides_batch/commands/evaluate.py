"""`evaluate`: accuracy, macro-F1, per-class metrics, calibration and outlet-level agreement."""

from __future__ import annotations

import logging

import click

from ..cli import build_config, dataclass_options, run_command
from ..config import EvaluateConfig, ScoreConfig

# The scorer's options (model, columns, max length, batch tokens, device, precision, ...) come from
# ScoreConfig itself, so `evaluate --model` scores exactly as `score` would with the same flags.
_NOT_FROM_SCORE = ("input", "output", "run_id")

log = logging.getLogger(__name__)


@click.command("evaluate")
@dataclass_options(ScoreConfig, skip=_NOT_FROM_SCORE)
@dataclass_options(EvaluateConfig, required=("data",))
def command(**values) -> None:
    """Evaluate a model (--model, scored through the production scorer) or written scores (--scores)
    against labelled data: article metrics and outlet-level agreement, as JSON and markdown."""
    run_command(_evaluate, values)


def _evaluate(values: dict) -> None:
    from ..analysis.evaluate import evaluate_model, evaluate_scores, markdown_report, write_evaluation
    from ..errors import UserError

    cfg = build_config(EvaluateConfig, values)
    score_cfg = build_config(ScoreConfig, {k: v for k, v in values.items() if k not in ("data",)})
    if bool(score_cfg.model) == bool(cfg.scores):
        raise UserError("give exactly one of --model (score the labelled data now) or --scores (a `score` output)")
    if cfg.scores:
        result = evaluate_scores(cfg.scores, cfg, score_cfg.columns)
    else:
        result = evaluate_model(score_cfg, cfg)
    for note in result["notes"]:
        log.warning(note)
    if cfg.output:
        json_path, md_path = write_evaluation(result, cfg.output)
        log.info(f"wrote {json_path} and {md_path}")
    click.echo(markdown_report(result))
