"""Leases: which runs are at work on a score output directory, so that no run removes a part another live
run is about to commit (docs/scoring.md, "Several runs, one output").

A run holds `<output>/_leases/<run_id>.json` (pid, host, started, heartbeat) from before its first part
until it ends, error or not; a daemon thread rewrites it every HEARTBEAT_S seconds. A lease is live while
its heartbeat is younger than STALE_AFTER_S, except that a lease of this host whose process is gone is
dead at once. Device processes of `--devices` run under their parent's run id and lease."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from ..runtime.shutdown import process_alive
from .io import _fs, read_json, write_json
from .layout import lease_file, leases_root

HEARTBEAT_S = 30.0
# A run is taken for dead once its heartbeat is this old: twenty missed beats, far above any pause of a
# live process short of being stopped (SIGSTOP) or a clock skew of minutes between machines.
STALE_AFTER_S = 600.0

log = logging.getLogger(__name__)


@dataclass
class Lease:
    """This run's lease on `output`, kept fresh by a heartbeat thread until `release`."""

    output: str
    run_id: str
    started: float = field(default_factory=time.time)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)  # tells this process's lease from a namesake's
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def beat(self) -> None:
        write_json(lease_file(self.output, self.run_id), {
            "run_id": self.run_id, "pid": os.getpid(), "host": socket.gethostname(), "pid_namespace": _pid_namespace(),
            "started": self.started, "heartbeat": time.time(), "token": self.token})

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.beat()
            except OSError as exc:  # a storage hiccup: the next beat tries again, well inside STALE_AFTER_S
                log.warning("lease heartbeat of run %s failed: %s", self.run_id, exc)

    def release(self) -> None:
        """Stop the heartbeat and remove the lease (the run is over, whatever its outcome)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        fs, path = _fs(lease_file(self.output, self.run_id))
        try:
            if read_json(lease_file(self.output, self.run_id)).get("token") == self.token:  # not a retry's
                fs.rm(path)
        except (FileNotFoundError, ValueError):
            pass


def hold(output: str, run_id: str) -> Lease:
    """Take the lease of `run_id` on `output` (written before this returns) and start its heartbeat."""
    lease = Lease(output, run_id)
    lease.beat()
    lease._thread = threading.Thread(target=lease._run, name=f"lease-{run_id}", daemon=True)
    lease._thread.start()
    return lease


def other_live_runs(output: str, run_id: str | None = None) -> list[str]:
    """Run ids of the live leases on `output` other than `run_id`, sorted. Dead leases (killed runs) are
    removed on the way."""
    fs, root = _fs(leases_root(output))
    if not fs.exists(root):
        return []
    live = []
    now = time.time()
    for path in sorted(fs.glob(root.rstrip("/") + "/*.json")):
        name = os.path.basename(path)[:-len(".json")]
        if name == run_id:
            continue
        try:
            lease = read_json(lease_file(output, name))
        except FileNotFoundError:
            continue  # released while we looked
        except (ValueError, UnicodeDecodeError):
            lease = {}  # half-written by a store without atomic rename: judged by its age below
        if _alive(lease, fs.info(path) if not lease else None, now):
            live.append(name)
        else:
            try:
                fs.rm(path)
            except FileNotFoundError:
                pass
    return live


def _alive(lease: dict, info: dict | None, now: float) -> bool:
    if info is not None:  # unreadable: live while the file itself is recent
        stamp = info.get("mtime") or info.get("LastModified") or now
        return now - (stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)) < STALE_AFTER_S
    try:
        beat = float(lease.get("heartbeat", 0))
    except (TypeError, ValueError):
        beat = 0.0
    if now - beat >= STALE_AFTER_S:
        return False
    # Dead at once only where its pid means what it means here: same host name and same pid namespace
    # (containers can share a host name, never a pid namespace).
    here = _pid_namespace()
    if (here is not None and lease.get("host") == socket.gethostname() and lease.get("pid_namespace") == here
            and isinstance(lease.get("pid"), int)):
        return process_alive(lease["pid"])
    return True


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
