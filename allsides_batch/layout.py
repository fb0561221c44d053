"""The output layout: every path `score`, `aggregate`, `report` and the flows write or read, in one place.

Under a score output directory (hive-style, safe for several writers at once):
  scores/model_id=<id>/part-<key>.parquet       one part per input content (zstd)
  quarantine/model_id=<id>/part-<key>.parquet   rows that could not be scored, with a reason
  _manifest/model_id=<id>/<key>.json            written after the parts: the content is done iff it exists
  _fingerprints/<hash of path>.json             cache: path + stat signature -> content key (corpus.py)
  runs/<run_id>.json                            one summary per run
Under an aggregates directory: window=<window>/part-0.parquet and window=<window>/_summary.json.
Under a report directory: the files of REPORT_FILES.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .storage import _fs, join

SCORES_DIR, QUARANTINE_DIR, MANIFEST_DIR, RUNS_DIR = "scores", "quarantine", "_manifest", "runs"
FINGERPRINTS = "_fingerprints"   # per-path cache of content keys under the output directory
AGGREGATE_PART = "part-0.parquet"
AGGREGATE_SUMMARY = "_summary.json"


@dataclass(frozen=True)
class Layout:
    """Paths of one model's outputs under one output directory."""

    output: str
    score_id: str

    def score_part(self, key: str) -> str:
        return join(self.output, SCORES_DIR, f"model_id={self.score_id}", f"part-{key}.parquet")

    def quarantine_part(self, key: str) -> str:
        return join(self.output, QUARANTINE_DIR, f"model_id={self.score_id}", f"part-{key}.parquet")

    def manifest_dir(self) -> str:
        return join(self.output, MANIFEST_DIR, f"model_id={self.score_id}")

    def manifest_entry(self, key: str) -> str:
        return join(self.manifest_dir(), f"{key}.json")

    def run_summary(self, run_id: str) -> str:
        return join(self.output, RUNS_DIR, f"{run_id}.json")

    def done_keys(self) -> set[str]:
        fs, path = _fs(self.manifest_dir())
        if not fs.exists(path):
            return set()
        return {os.path.basename(p)[:-5] for p in fs.ls(path, detail=False) if p.endswith(".json")}


def aggregate_window_dir(aggregates: str, window: str) -> str:
    return join(aggregates, f"window={window}")


def aggregate_part(aggregates: str, window: str) -> str:
    return join(aggregate_window_dir(aggregates, window), AGGREGATE_PART)


def aggregate_summary(aggregates: str, window: str) -> str:
    return join(aggregate_window_dir(aggregates, window), AGGREGATE_SUMMARY)
