"""The streaming scorer: Parquet files in, one score row per article out, exactly once.

`score_corpus` plans the run (plan.py), scores the files on one device (device.py) or on several, one
process each (devices.py), then reconciles the output with the corpus as it is now (corpus.py).
"""

from __future__ import annotations

import os
import time
import uuid

from ..config import ScoreConfig
from ..corpus import reconcile
from ..leases import hold
from ..model import is_local_path
from ..storage import write_json
from .device import score_files
from .devices import parse_devices, score_on_devices
from .plan import ScoreSummary, pending_files, plan, score_id

__all__ = ["score_corpus", "plan", "pending_files", "score_id", "ScoreSummary"]


def score_corpus(cfg: ScoreConfig, files: list[str] | None = None) -> ScoreSummary:
    """Score cfg.input (or exactly `files`) into cfg.output; files already done are skipped."""
    started = time.perf_counter()
    p = plan(cfg, files)
    run_id = cfg.run_id or uuid.uuid4().hex[:12]
    summary = ScoreSummary(run_id=run_id, model_id=p.score_id, output=cfg.output, files_skipped=p.skipped,
                           files_same_content=p.same_content, max_length=p.max_length)
    # The lease says "at work here" to other runs' reconcile before any part is written (leases.py).
    lease = hold(p.layout.output, run_id)
    try:
        progress = _progress_bar(cfg, p.total_rows)
        try:
            if p.files:
                devices = parse_devices(cfg)
                if len(devices) == 1:
                    score_files(cfg, p, p.files, devices[0], run_id, summary, progress.update)
                else:  # device processes work under this run's id and lease
                    score_on_devices(cfg, p, devices, run_id, summary, progress.update)
        finally:
            progress.close()
        # Entries whose input left the corpus or was rewritten are retired; a whole-corpus run (no explicit
        # shard of files) also removes leftovers of killed runs, unless another live run holds a lease.
        summary.reconciled = reconcile(p.layout.output, p.corpus, prune_orphans=files is None,
                                       broken=p.broken, run_id=run_id).to_dict()
        summary.seconds = round(time.perf_counter() - started, 3)
        summary.articles_per_s = round(summary.input_rows / summary.seconds, 2) if summary.seconds else 0.0
        write_json(p.layout.run_summary(run_id), {**summary.to_dict(), "config": cfg.to_dict(),
                                                  # --model as given may be relative to where score ran
                                                  "model_dir": os.path.abspath(cfg.model)
                                                  if is_local_path(cfg.model) else cfg.model})
    finally:
        lease.release()
    return summary


def _progress_bar(cfg: ScoreConfig, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="art", desc="score", disable=not cfg.progress, dynamic_ncols=True)


