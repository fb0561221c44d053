"""Helpers the scoring reliability tests share: a score config, the parts read back, the CLI as a
subprocess, and a file-size limit that makes a disk look full."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from allsides_batch.analysis.aggregate import outlet_aggregates
from allsides_batch.config import AggregateConfig, ScoreConfig

REPO = Path(__file__).resolve().parents[1]


def score_config(model, inputs, out, **kw) -> ScoreConfig:
    """A ScoreConfig without progress bars, tokenizing in-process (workers 0); `kw` sets or overrides any field."""
    return ScoreConfig(**{"model": str(model), "input": [str(i) for i in inputs], "output": str(out),
                          "progress": False, "workers": 0, **kw})


def scores_table(out: Path) -> pa.Table:
    files = sorted((out / "scores").rglob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else pa.table({"id": pa.array([], pa.string())})


def aggregate(out: Path, **kw):
    """Aggregate the scores under `out` into a directory beside it."""
    return outlet_aggregates(AggregateConfig(scores=str(out), output=str(out.parent / f"{out.name}-agg"), **kw))


def run_cli(*args, env=None, unset=(), preexec=None, timeout=600) -> subprocess.CompletedProcess:
    """`python -m allsides_batch ARGS` in its own process: this environment plus `env`, less `unset`."""
    environ = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}
    return subprocess.run([sys.executable, "-m", "allsides_batch", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=environ, preexec_fn=preexec, timeout=timeout)


def file_size_limit(limit: int):
    """A preexec_fn: writes past `limit` bytes fail with EFBIG, as on a full disk."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply
