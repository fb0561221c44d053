"""`cv`: outlet-grouped, label-stratified K-fold cross-validation of a training recipe."""

from __future__ import annotations

import logging
import os

import click

from ..cli import build_config, dataclass_options, run_command
from ..config import TrainConfig
from ._command import Command, echo_markdown, echo_result, markdown_option

log = logging.getLogger(__name__)


@click.command("cv", cls=Command)
@click.option("--folds", type=int, default=5, show_default=True, help="number of folds")
@click.option("--grouping", type=click.Choice(["outlet", "random"]), default="outlet", show_default=True,
              help="outlet: each fold's outlets are unseen in training; random: the random-split comparison")
@click.option("--max-articles", type=int, default=None, help="cross-validate a seeded random subset of this size")
@click.option("--output", default=None, help="directory for cv.json and cv.md (default: write no files)")
@click.option("--jobs", type=int, default=1, show_default=True,
              help="folds trained at once, in worker processes (linear models fit on one core each)")
@dataclass_options(TrainConfig, required=("data",), skip=("test", "overwrite", "output"))
@markdown_option("the per-fold table")
def command(folds: int, grouping: str, max_articles: int | None, output: str | None, jobs: int, markdown: bool,
            **values) -> None:
    """Cross-validate a recipe on outlets held out per fold. Prints the result (mean and sd of each metric,
    per-fold figures) as one JSON object on stdout; --output writes cv.json and the markdown table cv.md,
    --markdown prints that table on stderr."""
    run_command(_cv, folds, grouping, max_articles, {**values, "output": output or ""}, jobs, markdown)


def _cv(folds: int, grouping: str, max_articles: int | None, values: dict, jobs: int = 1,
        markdown: bool = False) -> None:
    from ..errors import UserError
    from ..training.cv import cross_validate, markdown_table

    if max_articles is not None and max_articles < folds:
        raise UserError(f"--max-articles {max_articles} is fewer than --folds {folds}")
    cfg = build_config(TrainConfig, values)
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    result = cross_validate(cfg, folds=folds, grouping=grouping, output=cfg.output or None, max_articles=max_articles,
                            jobs=jobs)
    if markdown:
        echo_markdown(markdown_table(result.folds, result.summary))
    written = None
    if result.output_dir:
        written = {"json": os.path.join(result.output_dir, "cv.json"),
                   "markdown": os.path.join(result.output_dir, "cv.md")}
    f1 = result.summary["macro_f1"]
    log.info(f"macro-F1 {f1['mean']:.3f} ± {f1['sd']:.3f} over {folds} folds"
             + (f"; table in {written['markdown']}" if written and not markdown else "")
             + ("" if written or markdown else "; --markdown prints the per-fold table, --output DIR writes it"))
    echo_result({"folds": folds, "grouping": grouping,
                 "summary": {name: {k: round(v, 4) for k, v in stat.items() if k != "n"}
                             for name, stat in result.summary.items()},
                 "per_fold": result.folds, "written": written})
