"""Signals stop the whole job: SIGTERM, SIGINT or SIGHUP to a command (`score`, `train`, `nightly`, ...)
ends it and every process it started, at any depth: device processes, tokenizer and fold workers, and the
temporary Prefect server (uvicorn) that `nightly` runs on. Python's default SIGTERM kills only the
process that received it, and its atexit hooks (where Prefect stops that server) never run.

The first signal unwinds the command as Ctrl-C always has: SIGINT raises KeyboardInterrupt (click says
"Aborted!", exit 1), SIGTERM and SIGHUP raise SystemExit(128 + the signal number, the shell's
convention), so `finally` blocks drop half-written files and stop worker pools, and atexit hooks stop
the Prefect server. Two things make sure nothing outlives it: at exit, any descendant still running is
ended (SIGTERM, then SIGKILL after a grace period); and if the process itself is still running
STOP_AFTER_S after the signal (a flow's task running on in a worker thread, which an exception in the
main thread does not stop), or a second signal comes, it ends its descendants and exits at once. Any of
these is safe: what `score` committed stays committed, a file being written is a hidden temporary file
that a later run removes, and a rerun does only what is left (docs/operations.md, "Stopping a run").
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import sys
import threading
import time

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))
GRACE_S = 5.0        # how long descendants get to exit on SIGTERM before SIGKILL
STOP_AFTER_S = 20.0  # how long the unwinding after a signal may take before the process stops at once


def descendants(pid: int | None = None) -> list[int]:
    """Every live process below `pid` (default: this one), children first. Linux reads /proc; elsewhere
    only the multiprocessing children this process knows are found."""
    pid = os.getpid() if pid is None else pid
    if not os.path.isdir("/proc/self"):
        return [p.pid for p in multiprocessing.active_children()] if pid == os.getpid() else []
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:  # gone meanwhile
            continue
        # the command name (field 2) may hold spaces and parentheses: the parent pid follows the last ')'
        ppid = int(stat[stat.rfind(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(0), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def process_alive(pid: int) -> bool:
    """Whether process `pid` is running here (someone else's counts; an unreaped zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a child that exited but was not reaped yet is a zombie: it holds nothing
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return stat[stat.rfind(b")") + 2:].split()[0] != b"Z"
    except OSError:
        return not os.path.isdir("/proc/self")


def end_descendants(grace_s: float = GRACE_S) -> int:
    """SIGTERM every descendant, wait up to `grace_s` for them to exit, SIGKILL the rest; returns how
    many there were. A descendant started meanwhile (a pool replacing a worker) is caught on a second pass."""
    ended: set[int] = set()
    for _ in range(2):
        pids = [p for p in descendants() if p not in ended]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        ended.update(pids)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(process_alive(p) for p in pids):
            time.sleep(0.05)
        for pid in pids:
            if process_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    return len(ended)


_RECEIVED: list[int] = []  # the signals received, in order


def _say(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed or gone with the terminal
        pass


def _stop_now(signum: int) -> None:
    """End every descendant and exit with 128 + signum, running nothing else."""
    n = end_descendants()
    _say(f"stopped on {signal.Signals(signum).name}: {n} child process(es) ended")
    os._exit(128 + signum)


def _watchdog(signum: int) -> None:
    time.sleep(STOP_AFTER_S)
    _say(f"still running {STOP_AFTER_S:.0f} s after {signal.Signals(signum).name}: stopping now")
    _stop_now(signum)


def _at_exit() -> None:
    if _RECEIVED:  # unwound after a signal: nothing this run started may outlive it
        end_descendants()


def _on_signal(signum: int, frame) -> None:  # noqa: ARG001 - the signal module's handler signature
    _RECEIVED.append(signum)
    if len(_RECEIVED) > 1:  # a second signal while unwinding: the user means now
        _stop_now(signum)
    _say(f"\n{signal.Signals(signum).name}: stopping (what was committed is kept; a rerun does the rest)")
    threading.Thread(target=_watchdog, args=(signum,), name="stop-watchdog", daemon=True).start()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """Make SIGTERM, SIGINT and SIGHUP end this process and all its descendants. For command-line entry
    points, in their main thread: a library caller keeps its own handlers."""
    if threading.current_thread() is not threading.main_thread():
        return
    atexit.register(_at_exit)  # registered first, so it runs after Prefect's own exit hooks
    for sig in SIGNALS:
        # a signal the caller ignores stays ignored: `nohup` (SIGHUP) and a background job (SIGINT)
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _on_signal)


def ignore_interrupt(unwind_on_term: bool = False) -> None:
    """In a worker process: leave Ctrl-C (SIGINT, sent to the whole foreground process group) to the parent,
    which ends its workers itself, so the terminal does not fill with one traceback per worker. With
    `unwind_on_term`, the parent's SIGTERM raises SystemExit here, so the worker drops its half-written
    files on the way out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if unwind_on_term:
        signal.signal(signal.SIGTERM, _unwind)


def _unwind(signum: int, frame) -> None:  # noqa: ARG001
    signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM (the parent's grace period is over) kills
    raise SystemExit(128 + signum)
