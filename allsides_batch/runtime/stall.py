"""Crash-test seam shared by scoring and training: with the environment variable `env` set to
`<stage>:<n>` (or `<stage>`, the first time), the n-th time a process reaches `stage` it writes `<stage>` to
the file named by `<env>_MARKER` and waits to be killed or interrupted, or, when `<env>_RELEASE` names a
file, until that file exists and then goes on (a slow step rather than a dead one). Tests use it to stop a
run at an exact point (tests/scoring/test_run.py, tests/training/test_output_directory.py), or slow it down
at one (the concurrent-runs test of the scorer's manifest); unset, it costs one dictionary lookup."""

from __future__ import annotations

import os
import threading

TRAIN_STALL_ENV = "ALLSIDES_BATCH_TRAIN_STALL"  # training's seam (training/train.py, outlet_rule.py)
SCORE_STALL_ENV = "ALLSIDES_BATCH_SCORE_STALL"  # scoring's seam (scoring/stream.py; "encode" in a tokenizer worker)
_COUNTS: dict[tuple[str, str], int] = {}


def stall_point(env: str, stage: str) -> None:
    spec = os.environ.get(env)
    if not spec:
        return
    name, _, nth = spec.rpartition(":") if ":" in spec else (spec, "", "1")
    if name != stage:
        return
    _COUNTS[(env, stage)] = _COUNTS.get((env, stage), 0) + 1
    if _COUNTS[(env, stage)] == int(nth):
        with open(os.environ[env + "_MARKER"], "w") as fh:
            fh.write(stage)
        release = os.environ.get(env + "_RELEASE")
        waiting = threading.Event()
        while not (release and os.path.exists(release)):
            waiting.wait(0.1)
