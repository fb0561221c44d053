"""Scoring: Parquet corpora in, one score row per article out, exactly once.

run.py (score_corpus: the orchestrator) → plan.py (what to do), device.py (the single-device loop),
devices.py (one process per device) → engine.py (tokenizers + model), parts.py (rows, schemas, writers).
"""

from .device import STALL_ENV
from .plan import Plan, ScoreSummary, pending_files, plan, score_id
from .run import check_unreadable, score_corpus

__all__ = ["STALL_ENV", "Plan", "ScoreSummary", "check_unreadable", "pending_files", "plan", "score_corpus", "score_id"]
