"""Several devices on one machine: one process per device, the input files divided between them.

The same code path runs N CPU processes (`--devices cpu:N`), which is how the tests exercise it. Each
process scores its files exactly as a single-device run would (own model, own tokenizer workers,
own parts and manifest entries) and reports progress and its summary back through a queue.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import traceback
from typing import NamedTuple

from ..config import ScoreConfig
from ..errors import UserError
from ..storage.io import _fs

EXIT_WAIT_S = 30.0  # how long a device process that reported may take to exit before it is ended


def parse_devices(cfg: ScoreConfig) -> list[str]:
    """--devices 'all' | 'cuda:0,cuda:1' | 'cpu:N' → one device name per process (default: --device)."""
    spec = (cfg.devices or "").strip()
    if not spec:
        return [cfg.device]
    import torch

    if spec == "all":
        n = torch.cuda.device_count()
        if n == 0:
            raise UserError("--devices all: no CUDA device is visible; use --devices cpu:N for N CPU processes")
        return [f"cuda:{i}" for i in range(n)]
    if spec.startswith("cpu:"):
        count = spec[4:]
        if not count.isdigit() or int(count) < 1:
            raise UserError(f"--devices {spec}: write cpu:N with N >= 1 processes")
        return ["cpu"] * int(count)
    names = [d.strip() for d in spec.split(",") if d.strip()]
    for name in names:
        if not (name == "cpu" or name.startswith("cuda")):
            raise UserError(f"--devices: {name!r} is not cpu or cuda:N; give 'all', 'cuda:0,cuda:1' or 'cpu:N'")
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--devices: {name} requested but no CUDA device is visible")
    return names


def divide_files(files: list[str], n: int) -> list[list[str]]:
    """Largest file first to the least-loaded share, so shares finish at about the same time."""
    sizes = {}
    for url in files:
        fs, path = _fs(url)
        sizes[url] = fs.size(path) or 0
    shares: list[list[str]] = [[] for _ in range(n)]
    loads = [0] * n
    for url in sorted(files, key=lambda u: (-sizes[u], u)):
        i = loads.index(min(loads))
        shares[i].append(url)
        loads[i] += sizes[url]
    return [sorted(s) for s in shares]


class _Share(NamedTuple):
    """One device process's work: its device and files, its place among the processes."""

    index: int
    device: str
    files: list[str]
    n_devices: int


def _device_main(cfg: ScoreConfig, plan, share: _Share, run_id: str, out: mp.Queue,
                 parent_pid: int | None = None) -> None:
    """Entry point of one device process. It dies with the parent that started it (`parent_pid`): a parent
    killed with SIGKILL leaves no device process scoring on, nor its tokenizer processes (see
    engine.die_with_parent)."""
    from ..runtime.shutdown import ignore_interrupt
    from .engine import die_with_parent

    if parent_pid is not None:
        # The parent's thread that starts these processes waits for them, so the kernel signal is safe here.
        die_with_parent(parent_pid, kernel_signal=True)
    # Ctrl-C reaches the whole process group; the parent ends its device processes with SIGTERM, which
    # unwinds here so the part being written is dropped
    ignore_interrupt(unwind_on_term=True)
    from .plan import ScoreSummary
    from .stream import score_files

    index = share.index
    if share.device == "cpu":
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // share.n_devices))  # share the cores, don't oversubscribe
    summary = ScoreSummary(run_id=run_id, model_id=plan.score_id, output=cfg.output)
    try:
        score_files(cfg, plan, share.files, share.device, run_id, summary,
                    lambda n: out.put((index, "progress", n)), share.n_devices)
    except UserError as exc:
        out.put((index, "user_error", str(exc)))
        return
    except Exception as exc:  # noqa: BLE001 - not swallowed: the parent fails the run with this traceback
        out.put((index, "error", (traceback.format_exc(), _os_error_of(exc))))
        return
    out.put((index, "done", summary.to_dict()))


def score_on_devices(cfg: ScoreConfig, plan, devices: list[str], run_id: str, summary, progress) -> None:
    """Run one process per device over its share of plan.files; merge their summaries into `summary`."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    work = [(dev, files) for dev, files in zip(devices, divide_files(plan.files, len(devices))) if files]
    shares = [_Share(i, dev, files, len(devices)) for i, (dev, files) in enumerate(work)]
    me = os.getpid()
    procs = [ctx.Process(target=_device_main, args=(cfg, plan, share, run_id, out, me)) for share in shares]
    for proc in procs:
        proc.start()
    errors, agreements = [], []
    try:
        _collect(procs, out, summary, progress, errors, agreements)
    except BaseException:  # Ctrl-C, SIGTERM or a dead device process: the others stop now, not when done
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        raise
    finally:
        # Every process has reported (or the run is failing): each exits within moments. Bounded all the
        # same, so a process stuck on its way out never holds the run.
        _join(procs, timeout=5 if errors else EXIT_WAIT_S)
    if agreements:
        checked = sum(n for _, n in agreements)
        summary.int8_label_agreement = round(sum(a * n for a, n in agreements) / checked, 4)
    _raise_first(errors)


def _collect(procs: list, out, summary, progress, errors: list, agreements: list) -> None:
    """Read the processes' messages until each has reported: progress goes to `progress`, a summary is merged
    into `summary` (its int8 agreement into `agreements`), a failure is added to `errors`."""
    reported: set[int] = set()
    while len(reported) < len(procs):
        try:
            index, kind, payload = out.get(timeout=1.0)
        except queue.Empty:
            _check_exited(procs, reported, out)
            continue
        if kind == "progress":
            progress(payload)
            continue
        reported.add(index)
        if kind == "done":
            _merge(summary, payload)
            if payload["int8_label_agreement"] is not None:
                agreements.append((payload["int8_label_agreement"], payload["int8_rows_checked"]))
        else:
            errors.append((kind, payload))


def _join(procs: list, timeout: float) -> None:
    for proc in procs:
        proc.join(timeout=timeout)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)


def _raise_first(errors: list) -> None:
    """Raise the first device process's failure: its UserError, its OSError, or its traceback."""
    for kind, payload in errors:
        if kind == "user_error":
            raise UserError(payload)
        trace, os_error = payload
        failure = RuntimeError(f"a device process failed:\n{trace}")
        if os_error is not None:
            # The same OSError here (a full disk, a read-only output), so the caller handles it as it
            # handles one from a single-device run; the device's traceback is its cause.
            raise OSError(*os_error) from failure
        raise failure


def _check_exited(procs: list, reported: set[int], out) -> None:
    """Fail the run when a device process has exited, whatever its exit code, without reporting: its
    last message would already be readable (a process's queue is flushed before it exits)."""
    gone = [(i, p.exitcode) for i, p in enumerate(procs) if i not in reported and p.exitcode is not None]
    if gone and out.empty():
        i, code = gone[0]
        raise RuntimeError(f"device process {i} exited with code {code} before reporting")


def _os_error_of(exc: BaseException) -> tuple[int, str, str | None] | None:
    """(errno, strerror, filename) of the first OSError with an errno in `exc` or its causes, to raise again
    in the parent (an exception object need not survive the queue)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc.errno, exc.strerror or str(exc), exc.filename
        exc = exc.__cause__ or exc.__context__
    return None


def _merge(summary, part: dict) -> None:
    for name in ("input_rows", "scored_rows", "quarantined_rows", "files_scored", "files_unreadable",
                 "batch_halvings", "int8_rows_checked"):
        setattr(summary, name, getattr(summary, name) + part[name])
    summary.parts.extend(part["parts"])
    summary.quarantine_parts.extend(part["quarantine_parts"])
    summary.devices.extend(part["devices"])
    summary.files_changed_during_run.extend(part["files_changed_during_run"])
