"""`cv`: outlet-grouped, label-stratified K-fold cross-validation of a training recipe."""

from __future__ import annotations

import json

import click

from ..cli import build_config, dataclass_options, run_command
from ..config import TrainConfig


@click.command("cv")
@click.option("--folds", type=int, default=5, show_default=True, help="number of folds")
@click.option("--grouping", type=click.Choice(["outlet", "random"]), default="outlet", show_default=True,
              help="outlet: each fold's outlets are unseen in training; random: the random-split comparison")
@click.option("--max-articles", type=int, default=None, help="cross-validate a seeded random subset of this size")
@click.option("--output", default=None, help="directory for cv.json and cv.md (default: print only)")
@click.option("--jobs", type=int, default=1, show_default=True,
              help="folds trained at once, in worker processes (linear models fit on one core each)")
@dataclass_options(TrainConfig, required=("data",), skip=("test", "overwrite", "output"))
def command(folds: int, grouping: str, max_articles: int | None, output: str | None, jobs: int, **values) -> None:
    """Cross-validate a recipe on outlets held out per fold; writes cv.json and cv.md to --output."""
    run_command(_cv, folds, grouping, max_articles, {**values, "output": output or ""}, jobs)


def _cv(folds: int, grouping: str, max_articles: int | None, values: dict, jobs: int = 1) -> None:
    from ..errors import UserError
    from ..training.cv import cross_validate, markdown_table

    if max_articles is not None and max_articles < folds:
        raise UserError(f"--max-articles {max_articles} is fewer than --folds {folds}")
    cfg = build_config(TrainConfig, values)
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    result = cross_validate(cfg, folds=folds, grouping=grouping, output=cfg.output or None, max_articles=max_articles,
                            jobs=jobs)
    click.echo(markdown_table(result.folds, result.summary), nl=False)
    click.echo(json.dumps({name: {k: round(v, 4) for k, v in stat.items() if k != "n"}
                           for name, stat in result.summary.items()}))
