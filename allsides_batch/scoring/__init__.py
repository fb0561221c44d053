"""Scoring: Parquet corpora in, one score row per article out, exactly once.

run.py (score_corpus: the orchestrator) → plan.py (what to do), stream.py (the single-device loop),
device_processes.py (one process per device) → engine.py (tokenizers + model), parts.py (rows, schemas, writers).
"""

from .plan import Plan, ScoreSummary, pending_files, plan, score_id
from .run import check_unreadable, score_corpus
from .stream import STALL_ENV

__all__ = ["STALL_ENV", "Plan", "ScoreSummary", "check_unreadable", "pending_files", "plan", "score_corpus", "score_id"]
