"""The streaming scorer: Parquet files in, one score row per article out, exactly once.

`score_corpus` plans the run (plan.py), scores the files on one device (stream.py) or on several, one
process each (device_processes.py), then reconciles the output with the corpus as it is now (corpus.py).
"""

from __future__ import annotations

import os
import time
import uuid

from ..config import ScoreConfig
from ..models.hub import is_local_path
from ..storage.corpus import reconcile
from ..storage.io import write_json
from ..storage.leases import hold
from .device_processes import parse_devices, score_on_devices
from .plan import ScoreSummary, pending_files, plan, score_id
from .stream import score_files

__all__ = ["score_corpus", "plan", "pending_files", "score_id", "ScoreSummary", "check_unreadable"]


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


def check_unreadable(summaries: list[dict], max_share: float) -> None:
    """Raise a UserError when the runs of `summaries` (ScoreSummary.to_dict(): one run, or a night's shards)
    found every file they read unreadable, or more than `max_share` of them. What they scored is committed
    by then; the message says how many files and where their quarantine rows are."""
    read = sum(s["files_scored"] for s in summaries)
    unreadable = sum(s.get("files_unreadable", 0) for s in summaries)
    if not unreadable or (unreadable < read and unreadable / read <= max_share):
        return
    from ..errors import UserError
    from ..storage.layout import Layout

    first = summaries[0]
    where = Layout(first["output"].rstrip("/"), first["model_id"]).quarantine_dir()
    quarantined = (f"each unreadable file is one quarantine row (reason 'unreadable file: ...') under {where}: "
                   "give Parquet files (a file is read again once its bytes change)")
    if unreadable == read:
        raise UserError(f"none of the {read} input file(s) read could be read as Parquet (not Parquet, or damaged), "
                        f"so nothing was scored; {quarantined}")
    raise UserError(f"{unreadable} of the {read} input files read could not be read as Parquet (not Parquet, or "
                    f"damaged), more than --max-unreadable-files {max_share:g} of them; the "
                    f"{sum(s['scored_rows'] for s in summaries)} article(s) of the others are committed, and "
                    f"{quarantined}, or raise --max-unreadable-files")


def _progress_bar(cfg: ScoreConfig, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="art", desc="score", disable=not cfg.progress, dynamic_ncols=True)


