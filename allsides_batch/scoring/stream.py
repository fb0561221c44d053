"""One device: a feeder thread reads record batches, sorts rows into scorable and quarantined and hands
the texts to tokenizer processes; the model loop runs length-bucketed batches while the next batch is
being tokenized, and streams each input file's rows into one part committed by rename, then its manifest
entry (exactly once; layout: layout.py)."""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from .. import LABELS
from ..config import ScoreConfig
from ..errors import UserError
from ..runtime.stall import SCORE_STALL_ENV, stall_point
from ..schema import (
    BIAS_SCORE,
    CONFIDENCE,
    DATE,
    ID,
    INPUT_FILE,
    LABEL,
    MODEL_ID,
    N_TOKENS,
    P_CENTER,
    P_LEFT,
    P_RIGHT,
    QUARANTINE_SCHEMA,
    RUN_ID,
    SCORED_AT,
    SCORES_SCHEMA,
    SOURCE,
    SOURCE_URL,
    TRUNCATED,
    URL,
)
from ..storage.corpus import content_key
from ..storage.io import parquet_file, write_json
from ..storage.layout import Layout
from .engine import Encoded, Scorer, Tokenizers
from .parts import (
    PartWriter,
    damaged_rows,
    input_columns,
    model_refused_rows,
    split_batch,
    unreadable_row,
    with_run_columns,
)
from .plan import Plan, ScoreSummary

TOKENIZER_DIED = ("a tokenizer process ended unexpectedly (killed, or out of memory); the files finished so "
                  "far are kept: run the same command again to score the rest (with fewer --workers if "
                  "memory is short)")
STALL_ENV = SCORE_STALL_ENV  # test seam: "<stage>:<n>" pauses after the n-th such commit
NON_FINITE = "non-finite probabilities from the model"  # quarantine reason: weights load finite, yet overflowed



def default_workers(device_type: str, n_devices: int = 1, kind: str = "transformer") -> int:
    """GPU: the cores left after one per device (tokenizing is the bottleneck there). CPU: 0, i.e. a
    feeder thread; the model uses every core and a tokenizer process would only take cycles from it.
    A linear model alone does all its work in the workers: one per core."""
    if kind == "linear":
        return max(1, (os.cpu_count() or 2) // n_devices)
    if device_type != "cuda":
        return 0
    return max(1, min(15, ((os.cpu_count() or 2) - n_devices) // n_devices))


def _feed(cfg: ScoreConfig, files: list[str], tokenizers: Tokenizers, unit_rows: int, out: queue.Queue,
          stop: threading.Event) -> None:
    """Producer: ('file', url) … ('unit', table, waiter) / ('quarantine', table) … ('end', url), or
    ('unreadable', url, reason); ('error', exc) if anything unexpected happens."""
    names = input_columns(cfg.columns)
    try:
        for url in files:
            out.put(("file", url))
            try:
                pf = parquet_file(url)
                present = [v for v in dict.fromkeys(names.values()) if v in pf.schema_arrow.names]
                seen: set[str] = set()
                start = 0
                # Row group by row group: damage part-way through a file costs the rows of the damaged
                # group that were not read yet (quarantined one by one), not the whole file.
                for group in range(pf.num_row_groups):
                    group_rows = pf.metadata.row_group(group).num_rows
                    read = 0
                    try:
                        for batch in pf.iter_batches(batch_size=unit_rows, columns=present, row_groups=[group]):
                            if stop.is_set():
                                return
                            split = split_batch(batch, names, start + read, seen)
                            read += batch.num_rows
                            if split.quarantine.num_rows:
                                out.put(("quarantine", split.quarantine))
                            if split.keep.num_rows:
                                k = split.keep
                                waiter = tokenizers.submit(k["title"].to_pylist(), k["text"].to_pylist(),
                                                           k["source"].to_pylist())
                                out.put(("unit", k, waiter, split.row_index))
                    except (pa.ArrowException, OSError) as exc:
                        if read >= group_rows:
                            raise
                        reason = f"unreadable row group {group}: {type(exc).__name__}: {exc}"
                        out.put(("quarantine", damaged_rows(start + read, group_rows - read, reason[:500])))
                    start += group_rows
            except UserError as exc:
                out.put(("unreadable", url, f"unreadable file: {exc}"))
                continue
            except (pa.ArrowException, OSError) as exc:
                out.put(("unreadable", url, f"unreadable file: {type(exc).__name__}: {exc}"))
                continue
            out.put(("end", url))
    except BaseException as exc:  # noqa: BLE001 - not swallowed: the model loop re-raises it in the main thread
        out.put(("error", exc))
    finally:
        out.put(("stop", None))


class _FileOutput:
    """The parts of one input file being written."""

    def __init__(self, layout: Layout, url: str, qschema: pa.Schema, identity: tuple[str, dict],
                 inputs: list[str]):
        self.url, self.layout, self.qschema, self.inputs = url, layout, qschema, inputs
        self.key, self.fingerprint = identity
        self.scored_at = datetime.now(UTC)
        self.scores = PartWriter(layout.score_part(self.key), SCORES_SCHEMA)
        self.quarantine: PartWriter | None = None
        self.rows_in = 0

    def add_quarantine(self, table: pa.Table, run: dict) -> None:
        if self.quarantine is None:
            self.quarantine = PartWriter(self.layout.quarantine_part(self.key), self.qschema)
        self.quarantine.write(with_run_columns(table, self.qschema, **{INPUT_FILE: self.url}, **run))

    def abort(self) -> None:
        self.scores.abort()
        if self.quarantine is not None:
            self.quarantine.abort()
        self.quarantine = None

    def restart(self) -> None:
        """Drop what was written so far (the file turned out unreadable part-way) and start empty parts."""
        self.abort()
        self.scores = PartWriter(self.layout.score_part(self.key), SCORES_SCHEMA)
        self.rows_in = 0


def score_files(cfg: ScoreConfig, p: Plan, files: list[str], device: str, run_id: str,
                summary: ScoreSummary, progress=lambda n: None, n_devices: int = 1) -> None:
    """Score `files` on one device into p.layout, adding counts and part paths to `summary`."""
    scorer = Scorer.from_config(cfg, device, p.model)  # the model as the plan described it: not read again
    reference = None
    if cfg.quantize == "int8" and cfg.quantize_check:
        reference = Scorer.from_config(dataclasses.replace(cfg, quantize="none"), device, p.model)
    workers = cfg.workers if cfg.workers is not None else default_workers(scorer.device.type, n_devices, p.kind)
    tokenizers = Tokenizers(scorer.spec, workers)
    unit_rows = 4096 if scorer.device.type == "cuda" else 256
    events: queue.Queue = queue.Queue(maxsize=3)  # bounded: memory stays flat whatever the corpus size
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(cfg, files, tokenizers, unit_rows, events, stop), daemon=True)
    feeder.start()
    check = _Int8Check(reference, cfg.quantize_check) if reference is not None else None
    model_loop = _ModelLoop(p, run_id, scorer, check, summary, progress)
    try:
        model_loop.consume(events)
    except BaseException as exc:
        stop.set()
        model_loop.abort()
        if isinstance(exc, BrokenProcessPool):
            raise UserError(TOKENIZER_DIED) from exc
        raise
    finally:
        _stop_feeder(feeder, events, stop)
        tokenizers.close()
    summary.batch_halvings += scorer.halvings
    if check is not None:
        check.report(summary)
    summary.devices.append(str(scorer.device))


def _stop_feeder(feeder: threading.Thread, events: queue.Queue, stop: threading.Event) -> None:
    stop.set()
    while feeder.is_alive():  # unblock a feeder waiting on a full queue
        try:
            events.get(timeout=0.1)
        except queue.Empty:
            pass


class _Int8Check:
    """--quantize-check: how often the int8 model's label agrees with the full-precision `reference`'s on
    the first `limit` rows scored."""

    def __init__(self, reference: Scorer, limit: int):
        self.reference, self.limit = reference, limit
        self.agree = self.checked = 0

    def add(self, enc: Encoded, probs: np.ndarray) -> None:
        if self.checked >= self.limit:
            return
        n = min(self.limit - self.checked, enc.rows)
        ref = self.reference.row_probs(_first_rows(enc, n))
        self.agree += int((ref.argmax(1) == probs[:n].argmax(1)).sum())
        self.checked += n

    def report(self, summary: ScoreSummary) -> None:
        if self.checked:
            summary.int8_rows_checked += self.checked
            summary.int8_label_agreement = round(self.agree / self.checked, 4)


class _ModelLoop:
    """The consumer of _feed's events: each unit scored by the model into the parts of the file it belongs
    to, quarantined rows written beside them, each file committed at its end."""

    def __init__(self, p: Plan, run_id: str, scorer: Scorer, check: _Int8Check | None, summary: ScoreSummary,
                 progress):
        self.p, self.run_id, self.scorer, self.check = p, run_id, scorer, check
        self.summary, self.progress = summary, progress
        self.current: _FileOutput | None = None
        self.run: dict = {}

    def consume(self, events: queue.Queue) -> None:
        """Handle events until the feeder's last; an error in the feeder is raised here, in this thread."""
        handlers = {"file": self._file, "unit": self._unit, "quarantine": self._quarantine,
                    "unreadable": self._unreadable, "end": self._end}
        while True:
            kind, *args = events.get()
            if kind == "stop":
                return
            if kind == "error":
                raise args[0]
            handlers[kind](*args)

    def abort(self) -> None:
        """Drop the parts of the file being written."""
        if self.current is not None:
            self.current.abort()

    def _file(self, url: str) -> None:
        identity = self.p.identity[url]  # plan fingerprinted every file it hands out
        self.current = _FileOutput(self.p.layout, url, QUARANTINE_SCHEMA, identity,
                                   self.p.corpus.get(identity[0], [url]))
        self.run = {MODEL_ID: self.p.score_id, RUN_ID: self.run_id, SCORED_AT: self.current.scored_at}

    def _unit(self, table: pa.Table, waiter, rows: list[int]) -> None:
        current, enc = self.current, waiter()
        probs = self.scorer.row_probs(enc)
        finite = np.isfinite(probs).all(axis=1)  # (N,) a NaN or infinite row is never labelled
        if not finite.all():
            bad = np.flatnonzero(~finite)
            current.add_quarantine(model_refused_rows(table.take(bad), [rows[i] for i in bad], NON_FINITE),
                                   self.run)
        current.scores.write(_score_table(table, probs, enc, self.run, finite))
        current.rows_in += table.num_rows
        self.progress(table.num_rows)
        if self.check is not None:
            self.check.add(enc, probs)

    def _quarantine(self, table: pa.Table) -> None:
        self.current.add_quarantine(table, self.run)
        self.current.rows_in += table.num_rows
        self.progress(table.num_rows)

    def _unreadable(self, url: str, reason: str) -> None:
        """The file turned out unreadable, perhaps part-way: one quarantine row stands for all of it."""
        current = self.current
        current.restart()
        current.rows_in = 1
        current.add_quarantine(unreadable_row(reason), self.run)
        self.progress(1)
        committed = self.summary.files_scored
        _commit_file(current, self.run, self.summary)
        self.summary.files_unreadable += self.summary.files_scored - committed

    def _end(self, url: str) -> None:
        _commit_file(self.current, self.run, self.summary)


def _first_rows(enc: Encoded, n: int) -> Encoded:
    keep = enc.owner < n
    return Encoded([s for s, k in zip(enc.seqs, keep) if k], enc.owner[keep], enc.weight[keep],
                   enc.n_tokens[:n], enc.truncated[:n])


def _score_table(table: pa.Table, probs: np.ndarray, enc: Encoded, run: dict, keep: np.ndarray) -> pa.Table:
    """Score rows for one unit, the rows where `keep` (N,) is true: the input's id/source/date/url columns
    plus probabilities and labels."""
    probs = probs[keep].astype(np.float32)  # (K, 3) left, center, right
    cols = {k: table[k].filter(keep) for k in (ID, SOURCE, DATE, URL, SOURCE_URL)}
    cols.update({
        LABEL: pa.array(np.asarray(LABELS)[probs.argmax(1)]), P_LEFT: probs[:, 0], P_CENTER: probs[:, 1],
        P_RIGHT: probs[:, 2], BIAS_SCORE: probs[:, 2] - probs[:, 0], CONFIDENCE: probs.max(1),
        N_TOKENS: enc.n_tokens[keep], TRUNCATED: enc.truncated[keep],
    })
    return with_run_columns(pa.table(cols), SCORES_SCHEMA, **run)


def _commit_file(out: _FileOutput, run: dict, summary: ScoreSummary) -> None:
    """Parts first, then the manifest entry: a kill between the two leaves a file that is simply redone.
    A file whose content changed while it was read is not committed: its rows would carry the old
    content's key; the next run scores the new content."""
    scored = out.scores.rows
    quarantined = out.quarantine.rows if out.quarantine is not None else 0
    if out.rows_in != scored + quarantined:  # the invariant every count downstream relies on
        raise RuntimeError(f"{out.url}: {out.rows_in} rows in but {scored} scored + {quarantined} quarantined")
    now = content_key(out.url, out.layout.output)
    if now is None or now[0] != out.key:
        out.abort()
        summary.files_changed_during_run.append(out.url)
        return
    parts = [out.scores.commit()]
    if out.quarantine is not None:
        parts.append(out.quarantine.commit())
    stall_point(STALL_ENV, "part-committed")
    entry = {"input": out.url, "inputs": sorted(out.inputs), "key": out.key, "fingerprint": out.fingerprint,
             "model_id": run[MODEL_ID],
             "rows_in": out.rows_in, "rows_scored": scored, "rows_quarantined": quarantined,
             "scores_part": parts[0], "quarantine_part": parts[1] if len(parts) > 1 else None,
             "run_id": run[RUN_ID], SCORED_AT: run[SCORED_AT].isoformat()}
    write_json(out.layout.manifest_entry(out.key), entry)
    stall_point(STALL_ENV, "manifest-committed")
    summary.input_rows += out.rows_in
    summary.scored_rows += scored
    summary.quarantined_rows += quarantined
    summary.files_scored += 1
    summary.parts.append(parts[0])
    if len(parts) > 1:
        summary.quarantine_parts.append(parts[1])


