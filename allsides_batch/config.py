"""Typed configuration. Defaults of TrainConfig are the published DistilBERT-AllSides recipe.

Each dataclass validates itself at construction and names the bad field. The CLI builds its
options from these fields (see cli_options), so a flag and its config field never drift apart.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Literal, get_args, get_type_hints

from .errors import ConfigError

Precision = Literal["auto", "bf16", "fp16", "fp32"]
Metric = Literal["macro_f1", "accuracy", "val_loss"]
ModelKind = Literal["linear", "transformer", "ensemble"]
GroupBy = Literal["source", "domain"]
LRScheduler = Literal["linear", "constant"]

# Outlet-level rules shared by aggregate, evaluate, report and training's validation metrics.
OUTLET_LABEL_THRESHOLD = 1 / 3  # outlet_label: mean score below -T left, above +T right (the range in thirds)
OUTLET_MIN_ARTICLES = 20  # outlets with fewer articles are flagged low_n and left out of outlet-level metrics
# Long articles as several windows (score --long-text chunk, train --train-windows).
WINDOW_STRIDE = 64  # tokens shared by consecutive windows
# score: more than this share of unreadable input files fails the run (score --max-unreadable-files). Half:
# a stray damaged file beside a good one is quarantined and the run goes on; mostly unreadable input is
# more likely the wrong files (CSV, a wrong glob) than damage, and a night that scored little should say so.
MAX_UNREADABLE_FILES = 0.5

# Where the nightly job reads and writes by default, relative to the repository root (the directory `make run`,
# `python -m allsides_batch.flows` and the deployments' pull step run in): the shared AllSides articles (corpus
# and training data), the published models with their `latest` link, and the night's output root.
SHARED_CORPUS = "../shared/data/allsides/articles.parquet"
MODELS_ROOT = "models"
NIGHTLY_OUTPUT = "runs/nightly"


def stride_limit(max_length: int) -> int:
    """The smallest stride too large for windows of max_length tokens: a window holds max_length - 2 tokens
    of the text (the tokenizer adds two special tokens), and consecutive windows must move on."""
    return max_length - 2


@dataclass
class Columns:
    """Column names in the input Parquet; defaults match ../shared/data/allsides/articles.parquet."""

    text: str = field(default="text", metadata={"help": "article body column"})
    title: str = field(default="title", metadata={"help": "headline column ('' for none); prepended to text"})
    label: str = field(
        default="auto",
        metadata={"help": "label column; 'auto' takes bias_text, else bias (left/center/right or 0/1/2)"},
    )
    source: str = field(default="source", metadata={"help": "outlet column"})
    id: str = field(default="id", metadata={"help": "article id column"})
    date: str = field(default="date", metadata={"help": "publication date column"})
    url: str = field(default="url", metadata={"help": "article URL column (optional; kept for domain keying)"})


@dataclass
class TrainConfig:
    """Everything `train` needs. Recipe defaults = the DistilBERT-AllSides model card."""

    data: list[str] = field(default_factory=list, metadata={"help": "Parquet file(s), directory, glob or hf:NAME"})
    output: str = field(default="", metadata={"help": "directory for the trained model"})
    base_model: str = field(
        default="distilbert-base-uncased", metadata={"help": "hub name or local directory of the encoder"}
    )
    columns: Columns = field(default_factory=Columns)
    kind: ModelKind = field(
        default="linear",
        metadata={"help": "linear: TF-IDF + logistic regression over the whole text (CPU, fast); transformer: "
                          "fine-tune --base-model; ensemble: both, combined with weights fitted on validation"},
    )
    split: str = field(
        default="outlet", metadata={"help": "validation split: outlet | random | column:NAME"}
    )
    group_by: GroupBy = field(
        default="source",
        metadata={"help": "what an outlet is for --split outlet and cv: the source name, or the registered "
                          "domain of the article URL (source where there is no URL)"},
    )
    val_fraction: float = field(default=0.1, metadata={"help": "validation share for outlet/random splits"})
    test: list[str] = field(default_factory=list, metadata={"help": "labelled Parquet to test the best model on"})
    learning_rate: float = field(default=3e-5, metadata={"help": "peak learning rate"})
    train_batch_size: int = field(default=32, metadata={"help": "training batch size"})
    eval_batch_size: int = field(default=32, metadata={"help": "evaluation batch size"})
    seed: int = field(default=12345, metadata={"help": "seed for split, init, shuffling"})
    adam_beta1: float = field(default=0.9, metadata={"help": "Adam beta1"})
    adam_beta2: float = field(default=0.999, metadata={"help": "Adam beta2"})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "Adam epsilon"})
    weight_decay: float = field(default=0.0, metadata={"help": "decoupled weight decay (0 = plain Adam)"})
    lr_scheduler: LRScheduler = field(default="linear", metadata={"help": "LR schedule after warmup"})
    warmup_steps: int = field(default=16, metadata={"help": "linear warmup steps"})
    epochs: int = field(default=20, metadata={"help": "maximum epochs"})
    early_stopping: int = field(
        default=3, metadata={"help": "stop after N epochs without improvement (0 = never)"}
    )
    metric_for_best: Metric = field(
        default="macro_f1", metadata={"help": "validation metric that picks the best epoch"}
    )
    precision: Precision = field(
        default="auto", metadata={"help": "auto = bf16 on GPUs that support it, else fp16; fp32 on CPU"}
    )
    max_length: int = field(default=512, metadata={"help": "maximum tokens per article"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimizer steps (smoke runs)"})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "use at most this many training rows (ensemble: its transformer half only)"}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "use at most this many validation rows"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    overwrite: bool = field(default=False, metadata={"help": "replace a model already in --output"})
    # ---- outlet-robust recipe options (docs/results.md has the measurements behind the defaults)
    mask_outlet: bool = field(
        default=False,
        metadata={"help": "remove outlet identity (own name, datelines, bylines, URLs, boilerplate) from the text"},
    )
    adversary_weight: float = field(
        default=0.0, metadata={"help": "gradient-reversal weight of the outlet adversary head (0 = off)"}
    )
    adversary_lr: float = field(default=3e-4, metadata={"help": "learning rate of the outlet adversary head"})
    class_balance: Literal["none", "loss", "sampler"] = field(
        default="none", metadata={"help": "class balancing: inverse-frequency loss weights or a balanced sampler"}
    )
    train_windows: int = field(
        default=1,
        metadata={"help": "windows of max_length tokens per article in training and evaluation (1 = head only)"},
    )
    window_stride: int = field(
        default=WINDOW_STRIDE, metadata={"help": "tokens shared by consecutive windows (as score --stride)"}
    )
    calibrate: bool = field(
        default=False, metadata={"help": "fit a temperature on the validation split; the scorer applies it"}
    )
    # ---- the linear model (kind linear, and the linear half of an ensemble)
    linear_ngram_max: int = field(default=2, metadata={"help": "linear: longest word n-gram"})
    linear_max_features: int = field(
        default=200_000, metadata={"help": "linear: vocabulary size (most frequent terms)"}
    )
    linear_min_df: int = field(default=2, metadata={"help": "linear: a term must occur in this many training articles"})
    linear_min_outlets: int = field(
        default=1, metadata={"help": "linear: a term must occur in articles of this many training outlets"}
    )
    # The three defaults below (C 2, outlet weight 0.5, balanced classes) were measured together against the
    # plain TF-IDF model in the 5-fold outlet-grouped protocol and on fifteen other folds: docs/results.md,
    # "Defaults" (row outlet-ranking-c2).
    linear_c: float = field(default=2.0, metadata={"help": "linear: inverse L2 regularisation strength"})
    linear_refit: bool = field(
        default=True,
        metadata={"help": "linear: once validated (and calibrated), refit on training + validation articles, so the "
                          "saved model learns from every outlet; metrics.json's validation figures are the first "
                          "fit's"},
    )
    linear_outlet_weight: float = field(
        default=0.5,
        metadata={"help": "linear: article weight 1/n_outlet^W (0 = every article alike, 1 = every outlet alike)"},
    )
    linear_class_weight: Literal["none", "balanced"] = field(
        default="balanced",
        metadata={"help": "linear: 'balanced' weighs each label inversely to its share of the training articles"},
    )
    linear_outlet_folds: int = field(
        default=5,
        metadata={"help": "linear: outlet-grouped folds scored out of fold to fit the outlet rule (outlet_label, "
                          "label_set) on outlets each model never saw; 0 = none (aggregate then uses ±T)"},
    )
    progress: bool = field(default=True, metadata={"help": "show a progress bar per training epoch (stderr)"})

    def __post_init__(self) -> None:
        _as_columns(self)
        _as_lists(self, "data", "test")
        _check_literals(self)
        _positive(self, "learning_rate", "train_batch_size", "eval_batch_size", "epochs", "max_length",
                  "adam_epsilon")
        _non_negative(self, "warmup_steps", "early_stopping", "weight_decay", "adversary_weight", "window_stride")
        _positive(self, "adversary_lr", "train_windows", "linear_ngram_max", "linear_max_features", "linear_min_df",
                  "linear_min_outlets", "linear_c")
        if self.linear_outlet_folds == 1 or self.linear_outlet_folds < 0:
            raise ConfigError("linear_outlet_folds", f"must be 0 (no outlet rule) or at least 2, got "
                                                     f"{self.linear_outlet_folds}")
        if not 0.0 <= self.linear_outlet_weight <= 1.0:
            raise ConfigError("linear_outlet_weight", f"must be in [0, 1], got {self.linear_outlet_weight}")
        if self.train_windows > 1:
            _check_stride(self, "window_stride", self.max_length)
        _optional_positive(self, "max_steps", "max_train_samples", "max_eval_samples")
        _below_one(self, "adam_beta1", "adam_beta2")
        _check_val_fraction(self)
        if not re.fullmatch(r"outlet|random|column:.+", self.split):
            raise ConfigError("split", f"must be 'outlet', 'random' or 'column:NAME', got {self.split!r}")
        _check_device(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def unused_options(self) -> list[str]:
        """Options set away from their defaults that this kind of model does not read (a transformer's
        training options for --kind linear, the linear_* ones for --kind transformer), for a warning."""
        linear_only = [f.name for f in dataclasses.fields(self) if f.name.startswith("linear_")]
        unused = {"linear": TRANSFORMER_ONLY, "transformer": linear_only, "ensemble": []}[self.kind]
        defaults = TrainConfig()
        return [name for name in unused if getattr(self, name) != getattr(defaults, name)]


# What only the fine-tuning loop reads (TrainConfig.unused_options).
TRANSFORMER_ONLY = ("base_model", "learning_rate", "train_batch_size", "adam_beta1", "adam_beta2", "adam_epsilon",
                    "weight_decay", "lr_scheduler", "warmup_steps", "epochs", "early_stopping", "metric_for_best",
                    "precision", "max_length", "max_steps", "adversary_weight", "adversary_lr", "class_balance",
                    "train_windows", "window_stride")


def _check_literals(obj) -> None:
    hints = get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        choices = _literal_choices(hints[f.name])
        if choices and getattr(obj, f.name) not in choices:
            raise ConfigError(f.name, f"must be one of {', '.join(choices)}; got {getattr(obj, f.name)!r}")


def _literal_choices(tp) -> tuple[str, ...] | None:
    if getattr(tp, "__origin__", None) is Literal:
        return tuple(get_args(tp))
    return None


def _positive(obj, *names: str) -> None:
    for name in names:
        if not getattr(obj, name) > 0:
            raise ConfigError(name, f"must be > 0, got {getattr(obj, name)}")


def _non_negative(obj, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < 0:
            raise ConfigError(name, f"must be >= 0, got {getattr(obj, name)}")


def _optional_positive(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value <= 0:
            raise ConfigError(name, f"must be > 0 when given, got {value}")


def _below_one(obj, *names: str) -> None:
    """A share or threshold in [0, 1)."""
    for name in names:
        if not 0.0 <= getattr(obj, name) < 1.0:
            raise ConfigError(name, f"must be in [0, 1), got {getattr(obj, name)}")


def _check_val_fraction(obj) -> None:
    """train's validation share, which evaluate --split outlet/random repeats."""
    if not 0.0 < obj.val_fraction < 1.0:
        raise ConfigError("val_fraction", f"must be between 0 and 1, got {obj.val_fraction}")


def _check_device(obj) -> None:
    if not DEVICE.fullmatch(obj.device):
        raise ConfigError("device", f"must be auto, cpu, cuda or cuda:N, got {obj.device!r}")


def _as_columns(obj) -> None:
    """Columns given as a mapping (a config file, a flow parameter) become Columns."""
    if isinstance(obj.columns, dict):
        obj.columns = Columns(**obj.columns)


def _as_lists(obj, *names: str) -> None:
    """A list field given one path as a string holds that one path."""
    for name in names:
        if isinstance(getattr(obj, name), str):
            setattr(obj, name, [getattr(obj, name)])


def _check_stride(obj, name: str, max_length: int) -> None:
    limit = stride_limit(max_length)
    if getattr(obj, name) >= limit:
        raise ConfigError(name, f"must be smaller than max_length - 2 ({limit}), got {getattr(obj, name)}")


def _check_unreadable_share(obj) -> None:
    """score's --max-unreadable-files, which nightly passes on."""
    if not 0.0 <= obj.max_unreadable_files <= 1.0:
        raise ConfigError("max_unreadable_files", f"must be a share in [0, 1], got {obj.max_unreadable_files}")


def _check_dates(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and not _is_date(value):
            raise ConfigError(name, f"must be a date YYYY-MM-DD, got {value!r}")


def _is_date(value: str) -> bool:
    """YYYY-MM-DD naming a day of the calendar (2020-13-01 and 2021-02-29 are not)."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


RUN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")


@dataclass
class ScoreConfig:
    """Everything `score` needs.

    Output layout and exactly-once rules: see allsides_batch/storage/layout.py and docs/scoring.md.
    """

    model: str = field(default="", metadata={"help": "model directory or hub name"})
    input: list[str] = field(default_factory=list, metadata={"help": "Parquet file(s), directories or globs"})
    output: str = field(default="", metadata={"help": "output directory (scores, quarantine, manifest)"})
    columns: Columns = field(default_factory=Columns)
    max_length: int | None = field(
        default=None, metadata={"help": "tokens per article (default: the length the model was trained with)"}
    )
    batch_tokens: int | None = field(
        default=None, metadata={"help": "token budget per batch (default: 131072 on GPU, 16384 on CPU)"}
    )
    workers: int | None = field(
        default=None, metadata={"help": "tokenizer processes per device (default: GPU cores - 1, CPU 0 = a thread)"}
    )
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    devices: str | None = field(
        default=None, metadata={"help": "several devices, one process each: 'all', 'cuda:0,cuda:1' or 'cpu:N'"}
    )
    precision: Precision = field(default="auto", metadata={"help": "auto = bf16/fp16 on GPU, fp32 on CPU"})
    quantize: Literal["none", "int8"] = field(default="none", metadata={"help": "CPU only: dynamic int8"})
    quantize_check: int = field(
        default=64, metadata={"help": "int8: articles also scored in fp32 to report label agreement (0 = none)"}
    )
    label_map: str | None = field(
        default=None, metadata={"help": "rename model labels, e.g. LABEL_0=left,LABEL_1=center,LABEL_2=right"}
    )
    long_text: Literal["truncate", "chunk"] = field(
        default="truncate", metadata={"help": "truncate: first max_length tokens; chunk: average all windows"}
    )
    stride: int = field(default=WINDOW_STRIDE, metadata={"help": "chunk mode: tokens shared by consecutive windows"})
    run_id: str | None = field(default=None, metadata={"help": "run identifier (default: a new UUID)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    max_windows: int = field(
        default=64,
        metadata={"help": "chunk mode: windows scored per article, the first ones; a longer article is "
                          "marked truncated and the rest of it is not read"},
    )
    max_unreadable_files: float = field(
        default=MAX_UNREADABLE_FILES,
        metadata={"help": "exit 2 (after committing what was scored) when more than this share of the files "
                          "read was unreadable (not Parquet, damaged); a run where every file was unreadable "
                          "always fails; 1 = only then, 0 = any unreadable file"},
    )

    def __post_init__(self) -> None:
        _as_columns(self)
        _check_unreadable_share(self)
        _as_lists(self, "input")
        _check_literals(self)
        _optional_positive(self, "max_length", "batch_tokens")
        _non_negative(self, "stride", "quantize_check")
        if self.workers is not None and self.workers < 0:
            raise ConfigError("workers", f"must be >= 0 (0 = tokenize in a thread), got {self.workers}")
        if self.run_id is not None and not RUN_ID.fullmatch(self.run_id):
            raise ConfigError("run_id", f"must be a plain name (letters, digits, '.', '_', '-'; at most 128, not "
                                        f"starting with '.'), got {self.run_id!r}")
        _check_device(self)
        # The stride only matters in chunk mode; truncating runs keep the default whatever the length.
        if self.long_text == "chunk" and self.max_length is not None:
            _check_stride(self, "stride", self.max_length)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class AggregateConfig:
    """Everything `aggregate` needs."""

    scores: str = field(default="", metadata={"help": "scores directory written by `score`"})
    output: str = field(default="", metadata={"help": "aggregates output directory"})
    window: Literal["day", "week", "month", "all"] = field(default="all", metadata={"help": "time window"})
    since: str | None = field(default=None, metadata={"help": "first date to include (YYYY-MM-DD)"})
    until: str | None = field(default=None, metadata={"help": "last date to include (YYYY-MM-DD)"})
    outlet_key: Literal["source", "domain"] = field(
        default="source", metadata={"help": "group by outlet name or by the registered domain of the URL"}
    )
    outlet_map: str | None = field(default=None, metadata={"help": "CSV mapping outlet names to canonical ones"})
    min_articles: int = field(
        default=OUTLET_MIN_ARTICLES, metadata={"help": "outlets with fewer articles are flagged low_n"}
    )
    model_id: str | None = field(default=None, metadata={"help": "aggregate only this model's scores"})
    model: str | None = field(
        default=None,
        metadata={"help": "the model directory the scores came from: marks the outlets it was trained on "
                          "(seen_in_training) and gives its fitted outlet rule (outlet_label, label_set)"},
    )
    label_rule: Literal["fitted", "fixed"] = field(
        default="fitted",
        metadata={"help": "outlet_label: 'fitted' applies the model's outlet_rule.json (thresholds fitted on outlets "
                          "it never saw; needs --model), 'fixed' the ±T rule of --label-threshold"},
    )
    label_threshold: float = field(
        default=OUTLET_LABEL_THRESHOLD,
        metadata={"help": "the fixed rule: mean score below -T is left, above +T right, else center"},
    )
    set_level: float = field(
        default=0.9, metadata={"help": "label_set: the labels an outlet could have at this level (fitted rule)"},
    )

    def __post_init__(self) -> None:
        _check_literals(self)
        _positive(self, "min_articles")
        _below_one(self, "label_threshold")
        if not 0.0 < self.set_level < 1.0:
            raise ConfigError("set_level", f"must be in (0, 1), got {self.set_level}")
        _check_dates(self, "since", "until")
        if self.since and self.until and self.since > self.until:
            raise ConfigError("until", f"{self.until} is before --since {self.since}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class EvaluateConfig:
    """What `evaluate` evaluates on and how; the model side comes from ScoreConfig (the scorer's own options).
    --split outlet/random choose train's validation rows, so seed, val_fraction and group_by default to train's."""

    data: list[str] = field(default_factory=list, metadata={"help": "labelled Parquet file(s), directory or glob"})
    scores: str | None = field(default=None, metadata={"help": "evaluate these `score` outputs instead of --model"})
    split: str = field(default="all", metadata={
        "help": "rows to evaluate: all | outlet | random (train's validation rows for the same --seed and "
                "--val-fraction) | column:NAME (its valid rows) | column:NAME=VALUE"})
    val_fraction: float = field(default=TrainConfig.val_fraction,
                                metadata={"help": "validation share for --split outlet/random"})
    seed: int = field(default=TrainConfig.seed, metadata={"help": "seed of --split outlet/random (train's --seed)"})
    group_by: GroupBy = field(default=TrainConfig.group_by,
                          metadata={"help": "--split outlet groups by source or domain (train's --group-by)"})
    min_articles: int = field(default=OUTLET_MIN_ARTICLES,
                              metadata={"help": "outlet-level metrics use outlets with at least N articles"})
    label_threshold: float = field(default=OUTLET_LABEL_THRESHOLD,
                                   metadata={"help": "outlet label from mean score: < -T left, > T right"})
    model_id: str | None = field(default=None, metadata={"help": "with --scores: the model_id to evaluate"})
    output: str | None = field(default=None, metadata={"help": "directory for evaluation.json and evaluation.md"})

    def __post_init__(self) -> None:
        _as_lists(self, "data")
        if not re.fullmatch(r"all|outlet|random|column:[^=]+(=.+)?", self.split):
            raise ConfigError(
                "split", f"must be all, outlet, random, column:NAME or column:NAME=VALUE; got {self.split!r}"
            )
        _check_literals(self)
        _check_val_fraction(self)
        _positive(self, "min_articles")
        _below_one(self, "label_threshold")


@dataclass
class ReportConfig:
    """Everything `report` needs."""

    aggregates: str = field(default="", metadata={"help": "directory written by `aggregate`"})
    output: str = field(default="", metadata={"help": "directory for the charts and the table"})
    outlets: list[str] = field(
        default_factory=list, metadata={"help": "outlets for the trend chart (default: the 6 largest)"}
    )
    max_outlets: int = field(
        default=100, metadata={"help": "outlet chart: at most this many outlets, the largest by n"}
    )
    dpi: int = field(default=110, metadata={"help": "PNG resolution"})
    model: str | None = field(
        default=None,
        metadata={"help": "model directory: its out-of-fold scores draw unseen.png and unseen.md, how it places "
                          "outlets it never saw"},
    )
    axis: Literal["full", "data"] = field(default="full", metadata={
        "help": "score axis: full = [-1, 1]; data = zoomed to the intervals shown "
                "(weak or calibrated models score near 0)"})

    def __post_init__(self) -> None:
        _as_lists(self, "outlets")
        _check_literals(self)
        _positive(self, "max_outlets", "dpi")


@dataclass
class NightConfig:
    """The nightly job's options, which `allsides-batch nightly` and `python -m allsides_batch.flows` both take
    (allsides_batch/flows/__main__.py runs it): the corpus and where the night goes, and how to train
    models/latest when there is none. The transformer defaults are the CPU demo's (40 steps at 64 tokens); a GPU
    worker trains the full recipe."""

    corpus: list[str] = field(default_factory=list, metadata={
        "help": "Parquet file(s), directories or globs to score (default: the shared AllSides articles)"})
    output: str = field(default=NIGHTLY_OUTPUT, metadata={
        "help": "output root: scores shared by all nights, nights/<date>/aggregates and report"})
    models_root: str = field(default=MODELS_ROOT, metadata={"help": "published models and the latest pointer"})
    train_data: list[str] = field(default_factory=list, metadata={
        "help": "labelled Parquet to train models/latest on when there is none (default: the shared AllSides "
                "articles, whatever --corpus is)"})
    kind: ModelKind = field(default=TrainConfig.kind, metadata={
        "help": "model kind to train when no model exists (train's default)"})
    base_model: str | None = field(default=None, metadata={
        "help": "encoder to fine-tune for --kind transformer/ensemble (default: the pretrained MiniLM-L6)"})
    train_steps: int = field(default=40, metadata={"help": "training budget of a transformer when training"})
    max_length: int = field(default=64, metadata={"help": "tokens per article (transformer)"})
    quantize: Literal["none", "int8"] | None = field(default=None, metadata={
        "help": "CPU scoring weights of a transformer (default int8; a linear model has none)"})
    retrain: bool = field(default=False, metadata={"help": "train and publish a new model even if latest exists"})
    allow_below_chance: bool = field(default=False, metadata={
        "help": "publish a model trained here even if its validation macro-F1 is at or below chance (1/3)"})
    run_date: str | None = field(default=None, metadata={"help": "YYYY-MM-DD (default: today, UTC)"})
    max_unreadable_files: float = field(default=MAX_UNREADABLE_FILES, metadata={
        "help": "fail the night (exit 2, after committing what was scored) when more than this share of the "
                "corpus files it read was unreadable; a night where all were always fails"})
    progress: bool = field(default=True, metadata={"help": "progress bars while training and scoring"})

    def __post_init__(self) -> None:
        _as_lists(self, "corpus", "train_data")
        _check_literals(self)
        _positive(self, "train_steps", "max_length")
        _check_unreadable_share(self)
