"""`train`: fine-tune an encoder on labelled articles."""

from __future__ import annotations

import json

import click

from ..cli import build_config, dataclass_options, run_command
from ..config import TrainConfig


@click.command("train")
@dataclass_options(TrainConfig, required=("data", "output"))
def command(**values) -> None:
    """Fine-tune an encoder to label articles left/center/right (defaults: the DistilBERT-AllSides recipe)."""
    run_command(_train, values)


def _train(values: dict) -> None:
    from ..train import train_model

    cfg = build_config(TrainConfig, values)
    result = train_model(cfg)
    best = result.metrics["validation"]
    click.echo(json.dumps({"output": result.output_dir, "best_epoch": result.metrics["best_epoch"],
                           "val_accuracy": round(best["accuracy"], 4), "val_macro_f1": round(best["macro_f1"], 4)}))
