"""`explain`: which terms place one article, or one outlet, where a linear model puts it (exact contributions)."""

from __future__ import annotations

import logging

import click

from ..cli import run_command
from ._command import Command, echo_result

log = logging.getLogger(__name__)


@click.command("explain", cls=Command)
@click.option("--model", required=True, help="a linear (or ensemble) model directory that `train` wrote")
@click.option("--input", "inputs", multiple=True, required=True,
              help="Parquet file(s), directories or globs holding the article(s): id, source, title, text")
@click.option("--id", "article_id", default=None, help="explain this article")
@click.option("--outlet", default=None, help="explain every article of this source name, summed")
@click.option("--top", type=click.IntRange(1, 200), default=15, show_default=True, help="terms each way")
def command(**values) -> None:
    """Explain one article (--id) or one outlet (--outlet): the terms that push its bias logit
    (logit_right - logit_left) right and left, exact for a linear model (with the intercept they sum to
    the logit `score` computes). JSON on stdout, a readable table on stderr."""
    run_command(_explain, values)


def _explain(values: dict) -> None:
    from ..analysis.explain import explain_rows, load_explainer, markdown, read_rows

    explainer = load_explainer(values["model"])
    rows = read_rows(list(values["inputs"]), article_id=values["article_id"], outlet=values["outlet"])
    result = explain_rows(explainer, rows, values["top"])
    what = f"article {values['article_id']}" if values["article_id"] is not None else f"outlet {values['outlet']}"
    log.info("\n" + markdown(result, what))
    echo_result({"explained": what, **result})
