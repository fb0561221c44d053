"""Processes a test starts and must stop, with everything they start in turn: `prefect server start`,
workers, the image's command. Each runs in its own session (process group) from the repository root,
its output in a log file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class Proc:
    """A command in its own session (process group), output to a log file."""

    def __init__(self, args: list[str], env: dict, log: Path):
        self.log = log
        self.fh = open(log, "w")
        self.p = subprocess.Popen(args, env=env, cwd=REPO, stdout=self.fh, stderr=subprocess.STDOUT,
                                  start_new_session=True)

    def stop(self, sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
        """Stop it and everything it started: Prefect starts flow runs in sessions of their own, so
        the process tree is collected first, then each process signalled."""
        import psutil

        try:
            tree = psutil.Process(self.p.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        if self.p.poll() is None:
            os.killpg(self.p.pid, sig)
        for child in tree:
            try:
                child.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(tree, timeout=grace)
        for child in alive:
            child.kill()
        try:
            self.p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
        self.fh.close()

    def tail(self) -> str:
        return self.log.read_text()[-3000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
