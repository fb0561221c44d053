"""`evaluate`: accuracy, macro-F1, per-class metrics, calibration and outlet-level agreement."""

from __future__ import annotations

import logging

import click

from ..cli import build_config, dataclass_options, run_command
from ..config import EvaluateConfig, ScoreConfig
from ._command import Command, echo_markdown, echo_result, markdown_option

# The scorer's options (model, columns, max length, batch tokens, device, precision, ...) come from
# ScoreConfig itself, so `evaluate --model` scores exactly as `score` would with the same flags.
_NOT_FROM_SCORE = ("input", "output", "run_id", "max_unreadable_files")

log = logging.getLogger(__name__)


@click.command("evaluate", cls=Command)
@dataclass_options(ScoreConfig, skip=_NOT_FROM_SCORE)
@dataclass_options(EvaluateConfig, required=("data",))
@markdown_option("the evaluation tables")
def command(markdown: bool, **values) -> None:
    """Evaluate a model (--model, scored through the production scorer) or written scores (--scores)
    against labelled data: article metrics and outlet-level agreement. Prints the result as one JSON
    object on stdout (what evaluation.json holds); --output also writes evaluation.json and the markdown
    tables as evaluation.md, --markdown prints those tables on stderr."""
    run_command(_evaluate, values, markdown)


def _evaluate(values: dict, markdown: bool = False) -> None:
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
    written = None
    if cfg.output:
        json_path, md_path = write_evaluation(result, cfg.output)
        written = {"json": json_path, "markdown": md_path}
        log.info(f"wrote {json_path} and {md_path}")
    if markdown:
        echo_markdown(markdown_report(result))
    a = result["articles"]
    log.info(f"accuracy {a['accuracy']:.3f}, macro-F1 {a['macro_f1']:.3f} on {result['evaluated']} articles"
             + ("" if markdown or written else "; --markdown prints the tables, --output DIR writes them"))
    echo_result({**{k: v for k, v in result.items() if k != "notes"}, "written": written})
