"""Score rows written by hand in the scorer's layout, for the tests of what reads scores (aggregate,
report, the outlet rule): one row per call, the part files, four rows of two outlets whose statistics
are computed by hand, and a model directory that names the outlets it was trained on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from allsides_batch.schema import SCORED_AT, SCORES_SCHEMA

LABEL_OF = {0: "left", 1: "center", 2: "right"}
# The scorer's schema with scored_at as ISO text: the rows below give it as strings
STRING_TIME_SCHEMA = SCORES_SCHEMA.set(SCORES_SCHEMA.get_field_index(SCORED_AT), pa.field(SCORED_AT, pa.string()))


def score_row(id_, source, date, p_left, p_right, *, url=None, source_url=None, model="m1",
              scored_at="2026-01-01T00:00:00+00:00", run="r1") -> dict:
    p_center = 1.0 - p_left - p_right
    probs = [p_left, p_center, p_right]
    return {"id": id_, "source": source, "date": date, "label": LABEL_OF[int(np.argmax(probs))],
            "p_left": p_left, "p_center": p_center, "p_right": p_right, "bias_score": p_right - p_left,
            "confidence": max(probs), "n_tokens": 100, "truncated": False, "model_id": model, "run_id": run,
            "scored_at": scored_at, "url": url, "source_url": source_url}


def write_scores(root: Path, rows: list[dict], part: str = "part-0") -> Path:
    """The scorer's layout: ROOT/scores/model_id=<id>/part-*.parquet (+ an empty quarantine)."""
    by_model: dict[str, list[dict]] = {}
    for row in rows:
        by_model.setdefault(row["model_id"], []).append(row)
    for model, items in by_model.items():
        out = root / "scores" / f"model_id={model}"
        out.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(items).cast(STRING_TIME_SCHEMA)
        pq.write_table(table, out / f"{part}.parquet")
    (root / "quarantine").mkdir(exist_ok=True)
    return root


# Outlet A: two articles in January 2020 (same week), one in February; outlet B: one in January.
HAND = [
    score_row("a1", "A", "2020-01-06", 0.7, 0.1),   # bias -0.6, left
    score_row("a2", "A", "2020-01-08", 0.2, 0.6),   # bias +0.4, right
    score_row("a3", "A", "2020-02-03", 0.1, 0.1),   # bias  0.0, center
    score_row("b1", "B", "2020-01-31", 0.1, 0.8),   # bias +0.7, right
]


def model_with_outlets(tmp_path: Path, sources: dict, domains: dict) -> Path:
    """A model directory holding only training_outlets.json: the outlets it was trained on."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "training_outlets.json").write_text(json.dumps(
        {"version": 1, "fitted_on": "training rows", "articles": sum(sources.values()), "sources": sources,
         "domains": domains, "validation": {"articles": 0, "sources": {}, "domains": {}}}))
    return model
