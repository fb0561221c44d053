"""`train`: train a model (linear by default, transformer or ensemble) on labelled articles."""

from __future__ import annotations

import json

import click

from ..cli import build_config, dataclass_options, run_command
from ..config import TrainConfig
from ._command import Command


@click.command("train", cls=Command)
@dataclass_options(TrainConfig, required=("data", "output"))
def command(**values) -> None:
    """Train a model to label articles left/center/right: the full-text linear model (default), a fine-tuned
    encoder (--kind transformer; defaults: the DistilBERT-AllSides recipe) or both as an ensemble."""
    ctx = click.get_current_context()
    given = {name for name in values if ctx.get_parameter_source(name) in (click.core.ParameterSource.COMMANDLINE,
                                                                     click.core.ParameterSource.ENVIRONMENT)}
    run_command(_train, values, given)


def _train(values: dict, given: set[str] = frozenset()) -> None:
    from ..errors import UserError
    from ..training.train import train_model

    cfg = build_config(TrainConfig, values)
    if cfg.kind == "linear" and "base_model" in given:
        raise UserError("--base-model is for --kind transformer or ensemble; the linear model (the default kind) "
                        "has no encoder: add --kind transformer or --kind ensemble")
    result = train_model(cfg)
    best = result.metrics["validation"]
    click.echo(json.dumps({"output": result.output_dir, "best_epoch": result.metrics["best_epoch"],
                           "val_accuracy": round(best["accuracy"], 4), "val_macro_f1": round(best["macro_f1"], 4)}))
