"""Content keys, atomic writes and cache manifests: the one mechanism every step caches with.

A step's outputs are valid only when the manifest written after them exists and every file it
lists still has the recorded size and SHA-256. Anything deleted or truncated behind the cache's
back therefore reads as a miss and is recomputed, never loaded. A file whose size, mtime, ctime
and inode are all as recorded is not hashed again (git's index does the same): every write or
replacement changes at least one of them.
"""

import dataclasses
import hashlib
import importlib.util
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.records import FileEntry, StepRecord

if TYPE_CHECKING:
    import pandas


def content_key(*parts: object) -> str:
    """A short, stable key for JSON-able parts (settings, upstream keys, code versions)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def code_version(*modules: str) -> str:
    """Changes whenever the source of any of these modules changes (read, not imported)."""
    return content_key(*(Path(importlib.util.find_spec(m).origin).read_text() for m in modules))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stamp(path: Path) -> list[int] | None:
    """What any write or replacement of `path` changes; None where timestamps are whole seconds
    (FAT, some network filesystems), too coarse to tell two writes apart."""
    s = path.stat()
    if s.st_mtime_ns % 1_000_000_000 == 0:
        return None
    return [s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino]


# Writes get the kernel's coarse clock (a tick of at most 10 ms) as mtime. Recording a stamp this
# long after the newest write means any later write gets a later mtime.
TICK_NS = 20_000_000


@contextmanager
def atomic_path(final: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it into place only if the block succeeds.

    `suffix` is for writers that insist on an extension (numpy's `.npz`, Keras's `.keras`).
    """
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=f".tmp{suffix}")
    except OSError as exc:
        raise output_error(final, exc) from exc
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, final)
    except OutputError:
        raise
    except OSError as exc:  # disk full, quota, I/O error: the old file (if any) stays as it was
        raise output_error(final, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)


class OutputError(OSError):
    """A file digitflow could not write; the message names it and gives the system's reason."""


def output_error(path: Path, cause: OSError) -> OutputError:
    return OutputError(f"cannot write {path}: {cause.strerror or cause}; nothing was written there")


def check_writable(folder: Path) -> None:
    """Fail now, naming `folder`, rather than after the work whose result would land there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".digitflow-write-check."):
            pass
    except OSError as exc:
        raise output_error(folder, exc) from exc


def write_json(path: Path, value: object) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path):
    """The JSON at `path`, or None if it is missing or not JSON (a pointer not written yet)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_parquet(frame: "pandas.DataFrame", path: Path) -> None:
    with atomic_path(path, suffix=".parquet") as tmp:
        frame.to_parquet(tmp, index=False)


def write_manifest(manifest: Path, files: dict[str, Path], info: dict) -> StepRecord:
    """Record `files` (name → path) with size, SHA-256 and stamp, plus the small JSON-able `info`."""
    newest = max((p.stat().st_mtime_ns for p in files.values()), default=0)
    time.sleep(max(0, newest + TICK_NS - time.time_ns()) / 1e9)
    record = StepRecord(files={name: FileEntry(str(p), p.stat().st_size, file_sha256(p), stamp(p))
                               for name, p in files.items()}, info=info)
    write_json(manifest, record.to_json())
    return record


def read_manifest(manifest: Path) -> StepRecord | None:
    """The manifest's record if every file it lists is intact, else None."""
    try:
        record = StepRecord.from_json(json.loads(manifest.read_text()))
        for entry in record.files.values():
            p = Path(entry.path)
            if entry.stamp is not None and entry.stamp == stamp(p):
                continue  # untouched since it was hashed
            if p.stat().st_size != entry.size or file_sha256(p) != entry.sha256:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def cached_step(manifest: Path, refresh: bool,
                produce: Callable[[], tuple[dict[str, Path], dict]]) -> StepRecord:
    """The intact record at `manifest`, or run `produce()` and record the (files, info) it made.

    The returned record also says whether it was `cached` and how long this call took
    (`seconds`); neither is stored.
    """
    started = time.perf_counter()
    record = None if refresh else read_manifest(manifest)
    cached = record is not None
    if record is None:
        record = write_manifest(manifest, *produce())
    return dataclasses.replace(record, cached=cached, seconds=time.perf_counter() - started)
