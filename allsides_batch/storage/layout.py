"""The output layout: every path `score`, `aggregate`, `report` and the flows write or read, in one place.

Under a score output directory (hive-style, safe for several writers at once):
  scores/model_id=<id>/part-<key>.parquet       one part per input content (zstd)
  quarantine/model_id=<id>/part-<key>.parquet   rows that could not be scored, with a reason
  _manifest/model_id=<id>/<key>.json            written after the parts: the content is done iff it exists
  _fingerprints/<hash of path>.json             cache: path + stat signature -> content key (corpus.py)
  _leases/<run_id>.json                         one per run at work, refreshed by a heartbeat (leases.py)
  runs/<run_id>.json                            one summary per run
Under an aggregates directory: window=<window>/part-0.parquet and window=<window>/_summary.json.
Under a report directory: the files of REPORT_FILES.
Under the nightly flow's output root: a score output directory, and nights/<run_date>/aggregates and
nights/<run_date>/report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .io import _fs, join

SCORES_DIR, QUARANTINE_DIR, MANIFEST_DIR, RUNS_DIR = "scores", "quarantine", "_manifest", "runs"
FINGERPRINTS = "_fingerprints"   # per-path cache of content keys under the output directory
LEASES_DIR = "_leases"           # one lease per run at work on the output directory
MODEL_PARTITION = "model_id="    # hive partition of one model's parts and manifest entries
PART_PREFIX, PART_SUFFIX = "part-", ".parquet"
WINDOW_PARTITION = "window="     # hive partition of one window's aggregates
AGGREGATE_PART = "part-0.parquet"
AGGREGATE_SUMMARY = "_summary.json"
REPORT_OUTLET_CHART, REPORT_TREND_CHART, REPORT_TABLE = "outlets.png", "trend.png", "summary.md"
REPORT_FILES = (REPORT_OUTLET_CHART, REPORT_TREND_CHART, REPORT_TABLE)
# with a model that kept its out-of-fold scores: how it places outlets it never saw
REPORT_UNSEEN_CHART, REPORT_UNSEEN_TABLE = "unseen.png", "unseen.md"
# with a linear model and the corpus: why the largest outlets sit where they do
REPORT_TERMS = "terms.md"
NIGHTS_DIR, NIGHT_AGGREGATES, NIGHT_REPORT = "nights", "aggregates", "report"


def scores_root(output: str) -> str:
    """Every model's score parts under a score output directory."""
    return join(output, SCORES_DIR)


def quarantine_root(output: str) -> str:
    """Every model's quarantine parts under a score output directory."""
    return join(output, QUARANTINE_DIR)


def manifest_root(output: str) -> str:
    """Every model's manifest entries under a score output directory."""
    return join(output, MANIFEST_DIR)


def run_summary(output: str, run_id: str) -> str:
    """The summary one run wrote under a score output directory."""
    return join(output, RUNS_DIR, f"{run_id}.json")


def leases_root(output: str) -> str:
    """The leases of the runs at work on a score output directory."""
    return join(output, LEASES_DIR)


def lease_file(output: str, run_id: str) -> str:
    """The lease one run holds while it works on a score output directory."""
    return join(leases_root(output), f"{run_id}.json")


def part_name(key: str) -> str:
    """The file name of a score or quarantine part of one input content."""
    return f"{PART_PREFIX}{key}{PART_SUFFIX}"


def part_key(name: str) -> str | None:
    """The content key in a part's file name; None for a file that is not a part."""
    if name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX):
        return name[len(PART_PREFIX):-len(PART_SUFFIX)]
    return None


@dataclass(frozen=True)
class Layout:
    """Paths of one model's outputs under one output directory."""

    output: str
    score_id: str

    def scores_dir(self) -> str:
        return join(scores_root(self.output), f"{MODEL_PARTITION}{self.score_id}")

    def quarantine_dir(self) -> str:
        return join(quarantine_root(self.output), f"{MODEL_PARTITION}{self.score_id}")

    def score_part(self, key: str) -> str:
        return join(self.scores_dir(), part_name(key))

    def quarantine_part(self, key: str) -> str:
        return join(self.quarantine_dir(), part_name(key))

    def manifest_dir(self) -> str:
        return join(manifest_root(self.output), f"{MODEL_PARTITION}{self.score_id}")

    def manifest_entry(self, key: str) -> str:
        return join(self.manifest_dir(), f"{key}.json")

    def run_summary(self, run_id: str) -> str:
        return run_summary(self.output, run_id)

    def done_keys(self) -> set[str]:
        fs, path = _fs(self.manifest_dir())
        if not fs.exists(path):
            return set()
        return {os.path.basename(p)[:-5] for p in fs.ls(path, detail=False) if p.endswith(".json")}


def aggregate_window_dir(aggregates: str, window: str) -> str:
    return join(aggregates, f"{WINDOW_PARTITION}{window}")


def aggregate_part(aggregates: str, window: str) -> str:
    return join(aggregate_window_dir(aggregates, window), AGGREGATE_PART)


def aggregate_summary(aggregates: str, window: str) -> str:
    return join(aggregate_window_dir(aggregates, window), AGGREGATE_SUMMARY)


def night_dir(root: str, run_date: str) -> str:
    """One night's directory under the nightly flow's output root."""
    return join(root, NIGHTS_DIR, run_date)


def night_aggregates(root: str, run_date: str) -> str:
    return join(night_dir(root, run_date), NIGHT_AGGREGATES)


def night_report(root: str, run_date: str) -> str:
    return join(night_dir(root, run_date), NIGHT_REPORT)
