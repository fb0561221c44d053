"""Flow `train-model`: validate data → train (the library's train_model) → evaluate → publish.

Publishing copies the trained directory into the models root under its model id and only then moves
the `latest` pointer, so a failed or rejected training run never changes what the nightly job scores
with. The training parameters are TrainConfig fields (allsides_batch/config.py): one left unset (None)
keeps TrainConfig's default, so the recipe's defaults are set there only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from allsides_batch.config import MODELS_ROOT, SHARED_CORPUS, LRScheduler, Metric, ModelKind, Precision
from allsides_batch.errors import UserError
from allsides_batch.flows.score_corpus import storage_task
from allsides_batch.models.registry import check_quality


@task(name="validate-data", **storage_task)
def validate_data(cfg_dict: dict) -> dict:
    """Read the labelled data once, fail fast on missing columns or labels; return its shape."""
    from collections import Counter

    from allsides_batch import LABELS
    from allsides_batch.config import TrainConfig
    from allsides_batch.training.data import load_labelled

    cfg = TrainConfig(**cfg_dict)
    data = load_labelled(cfg.data, cfg.columns, fingerprint=False)
    if len(data) == 0:
        raise UserError(f"no usable labelled rows in {cfg.data}")
    counts = Counter(int(x) for x in data.labels)
    return {"articles": len(data), "outlets": len(set(data.sources)), "dropped": data.dropped,
            **{f"n_{name}": counts.get(i, 0) for i, name in enumerate(LABELS)}}


@task(name="train", persist_result=False)
def train_task(cfg_dict: dict) -> str:
    from allsides_batch.config import TrainConfig
    from allsides_batch.training.train import train_model

    return train_model(TrainConfig(**cfg_dict)).output_dir


@task(name="evaluate", persist_result=False)
def evaluate_task(model_dir: str, test: list[str], seed: int, min_macro_f1: float | None,
                  allow_below_chance: bool = False) -> dict:
    """Held-out quality as artifacts; refuses a model at or below chance (unless `allow_below_chance`) or
    below `min_macro_f1` (registry.check_quality). With test data the model
    is evaluated through the scorer (the production path) by allsides_batch.analysis.evaluate; without, the
    outlet-disjoint validation metrics training kept for its best epoch are used."""
    from allsides_batch.analysis.evaluate import evaluate_model, markdown_report, write_evaluation
    from allsides_batch.config import EvaluateConfig, ScoreConfig
    from allsides_batch.models.files import METRICS_FILE
    from allsides_batch.storage.io import read_json

    metrics = read_json(os.path.join(model_dir, METRICS_FILE))
    rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k != "per_class_f1"}
            for r in metrics["epochs"]]
    create_table_artifact(rows, key="train-model-epochs", description=f"per-epoch validation metrics, {model_dir}")
    if test:
        result = evaluate_model(ScoreConfig(model=model_dir, progress=False),
                                EvaluateConfig(data=test, seed=seed))
        write_evaluation(result, os.path.join(model_dir, "evaluation"))
        create_markdown_artifact(markdown_report(result), key="train-model-evaluation", description="test set")
        split, macro_f1, accuracy = "test", result["articles"]["macro_f1"], result["articles"]["accuracy"]
    else:
        val = metrics["validation"]
        split, macro_f1, accuracy = "validation", val["macro_f1"], val["accuracy"]
        create_markdown_artifact(
            f"# Trained model `{model_dir}`\n\nBest epoch {metrics['best_epoch']} by {metrics['metric_for_best']}: "
            f"validation accuracy {accuracy:.4f}, macro-F1 {macro_f1:.4f}, outlet Spearman "
            f"{val['outlets']['spearman']}.", key="train-model-evaluation", description="validation (outlet split)")
    result = {"split": split, "accuracy": accuracy, "macro_f1": macro_f1, "train_seconds": metrics["train_seconds"]}
    check_quality(macro_f1, split, allow_below_chance, min_macro_f1)
    return result


@task(name="publish", **storage_task)
def publish_task(model_dir: str, models_root: str, set_latest: bool) -> dict:
    from allsides_batch.models.registry import publish_model

    return publish_model(model_dir, models_root, set_latest=set_latest).to_dict()


def train_config(params: dict, default_output: str):
    """The TrainConfig of one train-model run: the flow parameters that are TrainConfig fields and were
    set (not None), then `recipe`'s fields; every other field keeps TrainConfig's default. Without an
    `output` the run writes (and may overwrite) `default_output`."""
    from allsides_batch.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    output = params.get("output")
    kwargs = {k: v for k, v in params.items() if k in fields and k != "output" and v is not None}
    for name in ("data", "test"):  # one path (`--param data=/data/x.parquet`) or a list of them
        if isinstance(kwargs.get(name), str):
            kwargs[name] = [kwargs[name]]
    kwargs.update(output=os.path.abspath(output or default_output), overwrite=output is None)
    recipe = dict(params.get("recipe") or {})
    both = sorted(set(kwargs) & set(recipe))
    if both:
        raise UserError(f"recipe sets {', '.join(both)}, which the flow's own parameters set: give each once")
    return TrainConfig(**kwargs, **recipe)


@flow(name="train-model", log_prints=True, persist_result=False)
def train_model_flow(  # noqa: PLR0913 (Prefect parameters: each typed, so a deployment run is validated by name)
    data: str | list[str] = [SHARED_CORPUS],  # noqa: B006 (one path or a list; copied per run)
    kind: ModelKind | None = None,
    base_model: str | None = None,
    models_root: str = MODELS_ROOT,
    output: str | None = None,
    columns: dict | None = None,
    split: str | None = None,
    val_fraction: float | None = None,
    test: str | list[str] | None = None,
    learning_rate: float | None = None,
    train_batch_size: int | None = None,
    eval_batch_size: int | None = None,
    seed: int | None = None,
    weight_decay: float | None = None,
    lr_scheduler: LRScheduler | None = None,
    warmup_steps: int | None = None,
    epochs: int | None = None,
    early_stopping: int | None = None,
    metric_for_best: Metric | None = None,
    precision: Precision | None = None,
    max_length: int | None = None,
    max_steps: int | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    device: str | None = None,
    min_macro_f1: float | None = None,
    allow_below_chance: bool = False,
    set_latest: bool = True,
    recipe: dict | None = None,
) -> dict:
    """Train, evaluate and publish a model. `output` (default runs/train/<time>) keeps this run's
    own copy; `<models_root>/<model_id>` is the published one and `<models_root>/latest` points at
    it once evaluation passed (on test data when given, else validation: above chance, 1/3 macro-F1, unless
    `allow_below_chance`, and at least `min_macro_f1`). The other parameters but `recipe` are TrainConfig
    fields, None keeping TrainConfig's default; `recipe` sets
    any other TrainConfig field by name (e.g. {"adversary_weight": 0.0, "calibrate": false})."""
    given = dict(locals())  # first statement: the parameters as passed
    log = get_run_logger()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    cfg = train_config(given, default_output=os.path.join("runs", "train", stamp))
    cfg_dict = cfg.to_dict()
    shape = validate_data(cfg_dict)
    log.info("data: %(articles)d articles from %(outlets)d outlets", shape)
    model_dir = train_task(cfg_dict)
    quality = evaluate_task(model_dir, cfg.test, cfg.seed, min_macro_f1, allow_below_chance)
    published = publish_task(model_dir, os.path.abspath(models_root), set_latest)
    log.info("published %s (%s macro-F1 %.4f)%s", published["path"], quality["split"], quality["macro_f1"],
             f"; {published['latest']} points at it" if published["latest"] else "")
    return {"data": shape, "model_dir": model_dir, "quality": quality, **published}


if __name__ == "__main__":
    train_model_flow()
