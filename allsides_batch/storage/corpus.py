"""The corpus as it is now: input files known by their content, the manifest of what is done, and
`reconcile`, which retires the scores of inputs deleted or rewritten since (docs/scoring.md)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from ..errors import UserError
from .io import _fs, file_sha256, is_local_fs, join, read_json, write_json
from .layout import FINGERPRINTS, MODEL_PARTITION, Layout, manifest_root, part_key, quarantine_root, scores_root


def _where(url: str) -> str:
    """A file's canonical name: URLs as given, local paths absolute with symlinks resolved."""
    return url if "://" in url else os.path.realpath(url)


def _signature(fs, path: str, url: str) -> tuple[dict, dict | None] | None:
    """(stat signature, content fingerprint the store already knows or None); None if the file is gone.

    Local files (a plain path or a file:// URL): size, mtime_ns, ctime_ns, inode and device. ctime
    cannot be set by a user, so a rewrite that keeps size and mtime (`cp -p`) still changes the
    signature. Object stores: size and the ETag / MD5 the store computes from the content, which is
    then the fingerprint itself."""
    if "://" not in url or is_local_fs(fs):
        try:
            st = os.stat(url if "://" not in url else path)
        except FileNotFoundError:
            return None
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino,
                "dev": st.st_dev}, None
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    stamp = next((info[k] for k in ("mtime", "LastModified", "last_modified", "updated") if info.get(k) is not None),
                 None)
    sig = {"size": info.get("size"), "stamp": str(stamp)}
    content = next((str(info[k]).strip('"') for k in ("ETag", "etag", "md5Hash") if info.get(k)), None)
    return sig, ({"size": info.get("size"), "etag": content} if content else None)


def content_key(url: str, cache_root: str | None = None, pending: list | None = None) -> tuple[str, dict] | None:
    """(key, fingerprint) naming the *content* of an input file, or None if it does not exist.

    The fingerprint is the sha256 of the bytes (local files, and stores without a content hash) or the
    store's ETag/MD5; the key is a short hash of it, so the same bytes reached by another path, a
    symlink or after `touch` get the same key, and any change of content gets a new one. Hashing reads
    the file once; with `cache_root` (the output directory) the result is cached under
    `<cache_root>/_fingerprints/` by path and stat signature, so later runs only stat the file. With
    `pending` (a list), new cache entries are appended to it for `write_cache` instead of written now."""
    fs, path = _fs(url)
    found = _signature(fs, path, url)
    if found is None:
        return None
    sig, known = found
    where = _where(url)
    cache = None
    if cache_root:
        cache = join(cache_root, FINGERPRINTS, hashlib.sha256(where.encode()).hexdigest()[:24] + ".json")
        cached = _read_cache(cache)
        if cached and cached.get("path") == where and cached.get("signature") == sig:
            return cached["key"], cached["fingerprint"]
    fingerprint = known or {"size": sig["size"], "sha256": file_sha256(url)}
    key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:20]
    if cache:
        entry = (cache, {"path": where, "signature": sig, "fingerprint": fingerprint, "key": key})
        if pending is not None:
            pending.append(entry)
        else:
            write_cache([entry])
    return key, fingerprint


def write_cache(entries: list) -> None:
    for url, entry in entries:
        try:
            write_json(url, entry)
        except OSError:
            pass  # a read-only output fails later with a clear error; a lost cache entry only costs a rehash


def _read_cache(url: str) -> dict | None:
    try:
        return read_json(url)
    except (FileNotFoundError, ValueError, OSError):
        return None


def file_key(url: str, cache_root: str | None = None, pending: list | None = None) -> tuple[str, dict]:
    """content_key of a file that must exist (a UserError if it does not)."""
    found = content_key(url, cache_root, pending)
    if found is None:
        raise UserError(f"input not found: {url!r}")
    return found


ENTRY_KEYS = ("key", "model_id", "rows_in", "rows_scored")  # besides `input` / `inputs`


@dataclass
class EntryCheck:
    """One manifest entry file and what is wrong with it: `entry` is None when it is damaged (not JSON,
    or keys missing); `problem` is "damaged entry", "missing part" (a part it names is gone) or None."""

    model_id: str
    key: str
    url: str
    entry: dict | None
    problem: str | None = None


def check_manifest(output: str, model_id: str | None = None) -> list[EntryCheck]:
    """Every manifest entry under `output` (of one model, or all), each checked: it parses, has its keys,
    and its score part (and quarantine part, when it names one) exists. Sorted by model id and key."""
    fs, path = _fs(manifest_root(output))
    if not fs.exists(path):
        return []
    partition = MODEL_PARTITION + (model_id or "*")
    parts = {table: _part_names(fs, table(output), partition) for table in (scores_root, quarantine_root)}
    found = []
    for p in sorted(fs.glob(path.rstrip("/") + f"/{partition}/*.json")):
        model = os.path.basename(os.path.dirname(p))[len(MODEL_PARTITION):]
        key = os.path.basename(p)[:-len(".json")]
        url = _unstrip_url(fs, manifest_root(output), p)
        try:
            with fs.open(p, "r") as fh:
                entry = json.load(fh)
        except FileNotFoundError:
            continue  # retired while we looked
        except (ValueError, UnicodeDecodeError):
            entry = None
        if not _well_formed(entry, model, key):
            found.append(EntryCheck(model, key, url, None, "damaged entry"))
            continue
        wanted = [(scores_root, True), (quarantine_root, bool(entry.get("quarantine_part")))]
        gone = any(need and (model, key) not in parts[table] for table, need in wanted)
        found.append(EntryCheck(model, key, url, entry, "missing part" if gone else None))
    return sorted(found, key=lambda c: (c.model_id, c.key))


def _well_formed(entry, model: str, key: str) -> bool:
    return (isinstance(entry, dict) and all(k in entry for k in ENTRY_KEYS) and bool(entry.get("inputs")
            or entry.get("input")) and entry["key"] == key and entry["model_id"] == model
            and all(isinstance(entry[k], int) for k in ("rows_in", "rows_scored")))


def _part_names(fs, table: str, partition: str) -> set[tuple[str, str]]:
    """(model id, content key) of every part in a scores or quarantine table: one listing, not a stat each."""
    _, root = _fs(table)
    names = set()
    for p in fs.glob(root.rstrip("/") + f"/{partition}/*"):
        key = part_key(os.path.basename(p))
        if key is not None:
            names.add((os.path.basename(os.path.dirname(p))[len(MODEL_PARTITION):], key))
    return names


def _unstrip_url(fs, like: str, path: str) -> str:
    return fs.unstrip_protocol(path) if "://" in like else path


def read_manifest(output: str, damaged: list[str] | None = None) -> list[dict]:
    """Every committed manifest entry under `output` (all models), sorted by model id and input URL.

    A damaged entry (not JSON, or keys missing) is left out; with `damaged` (a list) its URL is added."""
    entries = []
    for check in check_manifest(output):
        if check.entry is None:
            if damaged is not None:
                damaged.append(check.url)
        else:
            entries.append(check.entry)
    return sorted(entries, key=lambda e: (e["model_id"], entry_inputs(e)[0]))


def entry_inputs(entry: dict) -> list[str]:
    """The input paths a manifest entry stands for (entries of older versions name one `input`)."""
    return list(entry.get("inputs") or [entry["input"]])


def live_inputs(entry: dict, cache_root: str | None, extra: list[str] = ()) -> list[str]:
    """The paths among the entry's inputs (and `extra`) that still hold the content it scored."""
    return sorted(p for p in dict.fromkeys([*entry_inputs(entry), *extra])
                  if (found := content_key(p, cache_root)) is not None and found[0] == entry["key"])


@dataclass
class Reconciled:
    """What `reconcile` changed: entries whose input left the corpus, entries that promised parts no longer
    there or could not be read, and leftovers of killed runs."""

    retired_files: int = 0
    retired_rows: int = 0
    retired_inputs: list[str] = field(default_factory=list)
    relinked_files: int = 0
    orphan_parts_removed: int = 0
    prune_skipped_for_runs: list[str] = field(default_factory=list)  # other live runs: nothing was pruned
    broken: dict = field(default_factory=dict)  # (model id, key) -> "missing part" / "damaged entry"

    def to_dict(self) -> dict:
        problems = list(self.broken.values())
        return {"retired_files": self.retired_files, "retired_rows": self.retired_rows,
                "retired_inputs": self.retired_inputs[:20], "relinked_files": self.relinked_files,
                "orphan_parts_removed": self.orphan_parts_removed,
                "prune_skipped_for_runs": self.prune_skipped_for_runs,
                "missing_parts": problems.count("missing part"), "damaged_entries": problems.count("damaged entry")}


def reconcile(output: str, corpus: dict[str, list[str]] | None = None, prune_orphans: bool = False,
              broken: dict | None = None, run_id: str | None = None) -> Reconciled:
    """Make the output match the corpus as it is now, for every model scored into it.

    An entry whose inputs no longer hold its content (deleted, or rewritten with other bytes) is retired:
    its manifest entry goes first (from then on no reader counts it), then its parts. So is an entry that
    cannot be read or names a part that is gone (`broken`: such entries the plan already found and this
    run rescored, counted with these). `corpus` (content key -> paths seen this run) adds paths that now
    hold an entry's content, so a file moved or reached through a new name keeps its scores. With
    `prune_orphans` (the end of a whole-corpus run, or the night's parent after its shards), parts without
    a manifest entry whose content is not in `corpus`, and temporary files of killed runs older than an
    hour, are removed too, unless a run other than `run_id` holds a live lease on the output (leases.py):
    such a run may be about to write the entry of a part it committed, so nothing is pruned and its run
    ids are reported."""
    out = Reconciled(broken=dict(broken or {}))
    corpus = corpus or {}
    _match_entries(output, corpus, out)
    if prune_orphans:
        _prune_orphans(output, corpus, run_id, out)
    return out


def _match_entries(output: str, corpus: dict[str, list[str]], out: Reconciled) -> None:
    """Retire every manifest entry that is damaged, names a part that is gone, or whose inputs no longer
    hold its content (entry first, then its parts); relink those whose content now sits at other paths."""
    fs, _ = _fs(output)
    for check in check_manifest(output):
        layout = Layout(output, check.model_id)
        if check.problem is not None:
            _rm(fs, check.url)
            for part in (layout.score_part(check.key), layout.quarantine_part(check.key)):
                _rm(fs, part)
            out.broken[(check.model_id, check.key)] = check.problem
            continue
        entry = check.entry
        live = live_inputs(entry, output, corpus.get(entry["key"], []))
        if not live:
            _rm(fs, layout.manifest_entry(entry["key"]))
            for part in (layout.score_part(entry["key"]), layout.quarantine_part(entry["key"])):
                _rm(fs, part)
            out.retired_files += 1
            out.retired_rows += int(entry.get("rows_in", 0))
            out.retired_inputs.extend(entry_inputs(entry))
        elif live != entry_inputs(entry):
            write_json(layout.manifest_entry(entry["key"]), {**entry, "input": live[0], "inputs": live})
            out.relinked_files += 1


def _prune_orphans(output: str, corpus: dict[str, list[str]], run_id: str | None, out: Reconciled) -> None:
    """Remove parts without a manifest entry whose content is not in `corpus`, and temporary files older
    than an hour, unless a run other than `run_id` holds a live lease on the output."""
    import time

    from .leases import other_live_runs

    fs, _ = _fs(output)
    # Order matters: list the parts, then look for live runs, then read the manifest. A part listed here
    # was committed by a run that held its lease before it; if that lease is gone now the run ended, and
    # its entries were written before its lease was removed, so the manifest read below has them.
    found = [path for table in (scores_root(output), quarantine_root(output))
             for path in fs.glob(_fs(table)[1].rstrip("/") + f"/{MODEL_PARTITION}*/*")]
    out.prune_skipped_for_runs = other_live_runs(output, run_id)
    if out.prune_skipped_for_runs:
        return
    done = {(e["model_id"], e["key"]) for e in read_manifest(output)}
    now = time.time()
    for path in found:
        name = os.path.basename(path)
        model = os.path.basename(os.path.dirname(path))[len(MODEL_PARTITION):]
        key = part_key(name)
        if key is not None:
            if (model, key) not in done and key not in corpus:
                _rm(fs, path)
                out.orphan_parts_removed += 1
        elif name.startswith(".") and name.endswith(".tmp"):
            try:
                modified = fs.info(path).get("mtime") or now
            except FileNotFoundError:
                continue
            if now - float(modified) > 3600:
                _rm(fs, path)


def _rm(fs, url: str) -> None:
    _, path = _fs(url)
    try:
        fs.rm(path)
    except FileNotFoundError:
        pass


