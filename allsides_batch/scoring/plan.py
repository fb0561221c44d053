"""What a run will do, decided before any work: the model's score id and layout, the input files'
content keys, the files left to score (ScoreSummary: what a run did)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field

from ..config import ScoreConfig
from ..errors import UserError
from ..models.files import CONFIG_FILE
from ..schema import INPUT_REQUIRED
from ..storage.corpus import check_manifest, file_key, write_cache
from ..storage.io import check_output_dir, expand_inputs, parquet_file
from ..storage.layout import Layout
from .parts import input_columns


@dataclass
class ScoreSummary:
    """What one `score_corpus` call did."""

    run_id: str
    model_id: str
    output: str
    input_rows: int = 0
    scored_rows: int = 0
    quarantined_rows: int = 0
    files_scored: int = 0
    files_unreadable: int = 0  # of files_scored: quarantined whole, as one row (not Parquet, damaged)
    files_skipped: int = 0
    files_same_content: int = 0
    files_changed_during_run: list[str] = field(default_factory=list)
    reconciled: dict = field(default_factory=dict)
    seconds: float = 0.0
    articles_per_s: float = 0.0
    parts: list[str] = field(default_factory=list)
    quarantine_parts: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    max_length: int = 0
    int8_label_agreement: float | None = None
    int8_rows_checked: int = 0
    batch_halvings: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Plan:
    """Everything decided before any work: the model's score id, its layout, the files left to score."""

    model_dir: str
    score_id: str
    max_length: int
    layout: Layout
    files: list[str]
    skipped: int
    total_rows: int
    kind: str = "transformer"
    identity: dict = field(default_factory=dict)   # input URL -> (content key, fingerprint)
    corpus: dict = field(default_factory=dict)     # content key -> every input path holding that content
    same_content: int = 0                          # paths skipped: their bytes are another input's
    broken: dict = field(default_factory=dict)     # (model id, key) -> why its entry is not done (corpus.py)


def score_id(base_model_id: str, cfg: ScoreConfig, max_length: int, kind: str = "transformer") -> str:
    """The model_id written with every score: the model's hash (weights + config + text preparation +
    calibration) combined with the settings that change scores (max length, long-text mode, int8, labels).
    A linear model reads whole texts and has none of those settings."""
    if kind == "linear":
        settings = {"kind": "linear"}
    else:
        settings = {"max_length": max_length, "long_text": cfg.long_text, "quantize": cfg.quantize,
                    "label_map": cfg.label_map, "stride": cfg.stride if cfg.long_text == "chunk" else None}
        if cfg.long_text == "chunk":
            settings["max_windows"] = cfg.max_windows  # only here: truncate-mode ids stay as they were
    blob = json.dumps([base_model_id, settings], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def plan(cfg: ScoreConfig, files: list[str] | None = None) -> Plan:
    """Check model, labels and input columns (a clear error before any work) and list files not yet done."""
    from ..models.hub import check_complete, load_tokenizer, local_model_dir
    from ..models.identity import label_order, model_id, parse_label_map, read_model_kind
    from .engine import default_max_length, member_dirs

    if not cfg.output:
        raise UserError("--output is required: the directory for scores, quarantine and manifest")
    check_output_dir(cfg.output)
    model_dir = local_model_dir(cfg.model)  # a local path that is not a directory: "model directory not found"
    kind = read_model_kind(model_dir)["kind"]
    check_complete(model_dir)  # every file scoring reads, readable and finite, before any work
    transformer_dir, linear_dir = member_dirs(model_dir, kind)
    max_length = 0
    if transformer_dir is not None:
        config = _load_config(transformer_dir)
        label_order(config, parse_label_map(cfg.label_map))
        max_length = cfg.max_length or default_max_length(transformer_dir, config, load_tokenizer(transformer_dir))
    layout = Layout(cfg.output.rstrip("/"), score_id(model_id(model_dir), cfg, max_length, kind))
    all_files = list(files) if files is not None else expand_inputs(cfg.input)
    hashed: list = []  # fingerprint cache entries, written once the plan holds (nothing written before)
    identity = {url: file_key(url, layout.output, hashed) for url in all_files}
    corpus: dict[str, list[str]] = {}
    for url in all_files:
        corpus.setdefault(identity[url][0], []).append(url)
    # an entry counts as done only if it reads and its parts are there: a lost part or a damaged entry is redone
    checked = check_manifest(layout.output, layout.score_id)
    done = {c.key for c in checked if c.problem is None}
    broken = {(c.model_id, c.key): c.problem for c in checked if c.problem is not None}
    # one path per content: the same bytes reached through a symlink or a copy are scored once
    todo = [paths[0] for key, paths in corpus.items() if key not in done]
    names = input_columns(cfg.columns)
    total = 0
    for url in todo:
        try:
            pf = parquet_file(url)
        except UserError:
            total += 1  # unreadable: quarantined as one row when its turn comes
            continue
        missing = [f"{names[k]} ({k})" for k in INPUT_REQUIRED if names[k] not in pf.schema_arrow.names]
        if missing:
            raise UserError(f"{url}: missing column(s) {', '.join(missing)}; has {pf.schema_arrow.names}. "
                            "Map columns with --id-column/--source-column/--text-column")
        total += pf.metadata.num_rows
    same = sum(len(paths) - 1 for paths in corpus.values())
    write_cache(hashed)
    return Plan(model_dir, layout.score_id, max_length, layout, todo, len(all_files) - len(todo), total, kind,
                identity=identity, corpus=corpus, same_content=same, broken=broken)


def _load_config(model_dir: str):
    from transformers import AutoConfig

    if not os.path.isfile(os.path.join(model_dir, CONFIG_FILE)):
        raise UserError(f"{model_dir!r} is not a model directory: no {CONFIG_FILE}")
    try:
        return AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read the model config in {model_dir!r}: {exc}") from exc


def pending_files(cfg: ScoreConfig) -> list[str]:
    """Input files this model has not scored yet (no manifest entry for their current fingerprint)."""
    return plan(cfg).files


