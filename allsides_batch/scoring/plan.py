"""What a run will do, decided before any work: the model described once (models/description.py), its
score id and layout, the input files' content keys, the files left to score (ScoreSummary: what a run did)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from ..config import ScoreConfig
from ..errors import UserError
from ..models.description import ModelDescription, describe_model
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
    """Everything decided before any work: the model (described once for the whole run), its score id and
    layout, the files left to score."""

    model: ModelDescription
    score_id: str
    layout: Layout
    files: list[str]
    skipped: int
    total_rows: int
    identity: dict = field(default_factory=dict)   # input URL -> (content key, fingerprint)
    corpus: dict = field(default_factory=dict)     # content key -> every input path holding that content
    same_content: int = 0                          # paths skipped: their bytes are another input's
    broken: dict = field(default_factory=dict)     # (model id, key) -> why its entry is not done (corpus.py)

    @property
    def model_dir(self) -> str:
        return self.model.model_dir

    @property
    def max_length(self) -> int:
        return self.model.max_length

    @property
    def kind(self) -> str:
        return self.model.kind


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
    if not cfg.output:
        raise UserError("--output is required: the directory for scores, quarantine and manifest")
    check_output_dir(cfg.output)
    model = describe_model(cfg, complete=True, with_id=True)
    layout = Layout(cfg.output.rstrip("/"), score_id(model.model_id, cfg, model.max_length, model.kind))
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
    total = _rows_to_score(cfg, todo)
    same = sum(len(paths) - 1 for paths in corpus.values())
    write_cache(hashed)
    return Plan(model, layout.score_id, layout, todo, len(all_files) - len(todo), total, identity=identity,
                corpus=corpus, same_content=same, broken=broken)


def _rows_to_score(cfg: ScoreConfig, todo: list[str]) -> int:
    """The rows of the files left to score (an unreadable file: one quarantine row); a UserError for a file
    without the columns scoring needs."""
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
    return total


def pending_files(cfg: ScoreConfig) -> list[str]:
    """Input files this model has not scored yet (no manifest entry for their current fingerprint)."""
    return plan(cfg).files


