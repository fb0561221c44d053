"""Parquet in and out over any fsspec URL: input expansion, reading, atomic commits, and the one place a
file's bytes are hashed (hash_file), with its in-process memo (memo_while_unchanged), and fingerprints."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TypeVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError

_GLOB_CHARS = set("*?[")


def _fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise UserError(f"cannot open {url!r}: {exc}") from exc


def is_local_fs(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return "file" in protocols or "local" in protocols


def _unstrip(fs: fsspec.AbstractFileSystem, original: str, path: str) -> str:
    """Give a path found by fs.find/glob back its protocol, so it can be opened on its own."""
    if "://" in original:
        return fs.unstrip_protocol(path)
    return path


def expand_inputs(paths: Sequence[str], suffix: str = ".parquet") -> list[str]:
    """Files named by `paths`: files as given, directories searched recursively (hive partitions
    included) for `suffix`, globs expanded. Sorted, de-duplicated. A path that names nothing is an error.

    A path that exists is that file or directory, even when its name holds glob characters
    (`paths/[1].parquet`); only a path that does not exist is expanded as a glob."""
    found: list[str] = []
    for raw in paths:
        path = str(raw)
        fs, stripped = _fs(path)
        if any(c in _GLOB_CHARS for c in path) and not fs.exists(stripped):
            matches = sorted(m for m in fs.glob(stripped) if fs.isfile(m))
            if not matches:
                raise UserError(f"no files match {path!r}")
            found.extend(_unstrip(fs, path, m) for m in matches)
        elif fs.isdir(stripped):
            matches = sorted(
                m for m in fs.find(stripped)
                if m.endswith(suffix) and not os.path.basename(m).startswith((".", "_"))
            )
            if not matches:
                raise UserError(f"directory {path!r} holds no *{suffix} files")
            found.extend(_unstrip(fs, path, m) for m in matches)
        elif fs.isfile(stripped):
            found.append(path)
        else:
            raise UserError(f"input not found: {path!r} (give a Parquet file, a directory or a glob)")
    return list(dict.fromkeys(found))


def parquet_file(url: str) -> pq.ParquetFile:
    """Open a Parquet file for streaming; a missing, unreadable or non-Parquet file is a UserError."""
    fs, path = _fs(url)
    try:
        return pq.ParquetFile(fs.open(path, "rb"))
    except FileNotFoundError as exc:
        raise UserError(f"input not found: {url!r}") from exc
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise UserError(f"{url!r} is not a readable Parquet file ({exc}); give Parquet input") from exc


def schema_names(url: str) -> list[str]:
    return parquet_file(url).schema_arrow.names


def read_table(url: str, columns: Sequence[str] | None = None) -> pa.Table:
    """Read whole columns of one Parquet file (for labelled data; the scorer streams instead)."""
    pf = parquet_file(url)
    try:
        return pf.read(columns=list(columns) if columns is not None else None)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise UserError(f"{url!r} could not be read as Parquet ({exc})") from exc


def exists(url: str) -> bool:
    fs, path = _fs(url)
    return fs.exists(path)


def makedirs(url: str) -> None:
    fs, path = _fs(url)
    fs.makedirs(path, exist_ok=True)


def check_output_dir(url: str, option: str = "--output") -> None:
    """Refuse an output directory that is a file, or lies under one, before anything is written there
    (makedirs would fail half-way with NotADirectoryError or FileExistsError)."""
    fs, path = _fs(url)
    probe = path.rstrip("/")
    while probe:
        if fs.isfile(probe):
            what = "is a file" if probe == path.rstrip("/") else f"lies under the file {probe!r}"
            raise UserError(f"{option} {url!r} {what}, not a directory; give a directory (created if missing)")
        if fs.isdir(probe):
            return
        parent = os.path.dirname(probe)
        if parent == probe:
            return
        probe = parent


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def _commit(fs: fsspec.AbstractFileSystem, tmp: str, final: str) -> None:
    if fs.protocol in ("file", ("file", "local")) or "file" in fs.protocol:
        os.replace(tmp, final)  # atomic on POSIX: readers see the old file or the new one, never half
    else:
        fs.mv(tmp, final)


def atomic_write_parquet(table: pa.Table, url: str, compression: str = "zstd") -> str:
    """Write `table` to a temporary name beside `url`, then rename it into place."""
    fs, path = _fs(url)
    fs.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with fs.open(tmp, "wb") as fh:
            pq.write_table(table, fh, compression=compression)
        _commit(fs, tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)
    return url


def atomic_write_text(url: str, text: str) -> str:
    fs, path = _fs(url)
    fs.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with fs.open(tmp, "w") as fh:
            fh.write(text)
        _commit(fs, tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)
    return url


def write_json(url: str, obj) -> str:
    return atomic_write_text(url, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(url: str):
    fs, path = _fs(url)
    with fs.open(path, "r") as fh:
        return json.load(fh)


def local_path(url: str) -> str | None:
    """The local file a URL names (a plain path as given, or a file:// URL's path); None for other stores."""
    if "://" not in url:
        return url
    fs, path = _fs(url)
    return path if is_local_fs(fs) else None


def hash_file(url: str, digest=None):
    """Feed the bytes of a file (a local path or any fsspec URL) into `digest`, a hashlib object (a new
    sha256 when None), and return it. Every file hash of the package is read here."""
    local = local_path(url)
    if local is None:
        fs, path = _fs(url)
        opened = fs.open(path, "rb")
    else:
        opened = open(local, "rb")
    with opened as fh:
        return hashlib.file_digest(fh, lambda: digest if digest is not None else hashlib.sha256())


# A file changed this recently might change again within the same tick of the file-system clock (a few
# milliseconds) and keep its whole stat; its results are not kept (git's "racily clean" files).
RECENT_NS = 100_000_000
_MEMO_SIZE = 4096
_MEMO: dict[tuple, object] = {}
T = TypeVar("T")


def _stat_key(path: str) -> tuple | None:
    """A local file's path and stat (size, mtime, ctime, inode, device): while it is the same, so are the
    bytes (a rewrite that keeps size and mtime, as `cp -p` does, still moves ctime). None if it changed
    within RECENT_NS or is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if time.time_ns() - st.st_ctime_ns < RECENT_NS:
        return None
    return os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


def memo_while_unchanged(what: tuple, paths: Sequence[str], compute: Callable[[], T]) -> T:
    """compute(), or what it returned for `what` earlier in this process while the local files `paths` were
    the same (_stat_key): a model file that the plan, the shards and the reconcile of one night all read is
    hashed once. The stat is taken before compute() reads, so a change part-way is a miss next time."""
    keys = tuple(_stat_key(p) for p in paths)
    if None in keys:
        return compute()
    key = (what, keys)
    if key not in _MEMO:
        value = compute()
        if len(_MEMO) >= _MEMO_SIZE:
            del _MEMO[next(iter(_MEMO))]
        _MEMO[key] = value
    return _MEMO[key]


def file_sha256(url: str) -> str:
    """The sha256 (hex) of a file's bytes; a local file's is kept in-process while it stays the same."""
    local = local_path(url)
    if local is None:
        return hash_file(url).hexdigest()
    return memo_while_unchanged(("sha256",), [local], lambda: hash_file(local).hexdigest())


def file_fingerprint(url: str) -> dict:
    """Size and sha256 of a file's bytes: names the exact data a model was trained on."""
    fs, path = _fs(url)
    return {"path": url, "bytes": fs.size(path), "sha256": file_sha256(url)}
