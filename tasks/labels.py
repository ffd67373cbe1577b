"""Labelled spans: batches of a user's own labelled digit pictures, immutable once taken in.

A span is a folder under data/labelled/ holding either a folder per digit (`7/*.png`) or pictures
plus a labels.csv (`path,label`). `digitflow label` makes one; training takes every span in,
checks that none changed since, keeps each picture once by content, and puts it in a split chosen
by its SHA-256: the same bytes always land in the same split, so adding spans never moves a
picture between the user's test set and training.
"""

import csv
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks.files import EXTENSIONS, ImageFile, display_name, iter_images, list_images, read_images
from tasks.mnist import IMAGE_SHAPE
from tasks.store import (TICK_NS, atomic_path, content_key, file_sha256, stamp, write_bytes,
                         write_json)

MANIFEST = "span.json"
FILES = "files.parquet"  # the span's file records, beside span.json (older spans: inside it)
LABELS_CSV = "labels.csv"
DIGITS = tuple(str(d) for d in range(10))
SPLITS = ("train", "test")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NOT_A_DIGIT = "not a digit"
NOT_LABELLED = frozenset({"", "skip", NOT_A_DIGIT})  # label cells a labelling tool leaves
# Beside the spans: the pictures a person answered "not a digit", which no review asks about again
NOT_DIGITS = "not-digits.csv"
CHUNK = 4096  # pictures decoded at a time: bounds memory on 100,000 pictures
SHOWN = 5  # paths named in a message before "and N more"
TO_FIX_CHANGED = ("A span is immutable once taken in; put new or corrected pictures in a new span "
                  "with `digitflow label ...`, or restore the files.")


class LabelError(ValueError):
    """Labelled pictures digitflow will not take, with what to do about it."""


class SpanChanged(LabelError):
    """A span whose files are no longer what was taken in."""


@contextmanager
def spans_locked(labelled: Path):
    """One writer at a time between checking what `labelled` holds and adding to it: two reviews
    of one queue then never label a picture twice (flock on the folder: no lock file)."""
    labelled.mkdir(parents=True, exist_ok=True)
    fd = os.open(labelled, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _not_digit_rows(labelled: Path) -> list[dict]:
    try:
        text = (labelled / NOT_DIGITS).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [row for row in csv.DictReader(io.StringIO(text)) if row.get("sha256")]


def not_digits(labelled: Path) -> dict[str, str]:
    """sha256 → path of every picture a person answered "not a digit". Deleting a line of the
    file has that picture asked about again."""
    return {row["sha256"]: row["path"] for row in _not_digit_rows(labelled)}


def remember_not_digits(labelled: Path, pictures: dict[str, str], answered_in: str) -> int:
    """Add sha256 → path pairs to NOT_DIGITS, rewritten whole (temp file and rename); how many
    were new. `answered_in` says where the answers came from. Call under spans_locked."""
    rows = _not_digit_rows(labelled)
    known = {row["sha256"] for row in rows}
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    new = [{"sha256": sha, "path": path, "answered_at": when, "answered_in": answered_in}
           for sha, path in sorted(pictures.items(), key=lambda item: item[1]) if sha not in known]
    if new:
        out = io.StringIO()
        writer = csv.DictWriter(out, ["sha256", "path", "answered_at", "answered_in"],
                                lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows + new)
        write_bytes(labelled / NOT_DIGITS, out.getvalue().encode())
    return len(new)


def split_of(sha256: str) -> str:
    """'test' for about 1 picture in 5, by content alone, so no later span can move it."""
    return "test" if int(sha256[:8], 16) % 5 == 0 else "train"


def column_counts(labels: pa.ChunkedArray) -> tuple[int, ...]:
    """How many of each digit, 0..9, in a label column."""
    return tuple(int(n) for n in np.bincount(labels.to_numpy(), minlength=10)[:10])


@dataclass(frozen=True)
class SpanFile:
    path: str  # relative to the span folder, "/"-separated
    label: int
    sha256: str
    size: int
    stamp: list[int] | None = None  # tasks.store.stamp when hashed: while equal, not rehashed


FILE_SCHEMA = pa.schema([("path", pa.string()), ("label", pa.int64()), ("sha256", pa.string()),
                         ("size", pa.int64()), ("stamp", pa.list_(pa.int64()))])


class Rows:
    """Records held as Arrow columns, not a Python object each: taking in a span of 100,000
    pictures peaked at 336 MiB this way, at 377 MiB with the records as objects (same span and
    process, docs/BENCHMARKS.md). Iterating yields them as `kind`, a chunk of objects at a time."""

    def __init__(self, table: pa.Table, kind: type):
        self.table, self.kind = table, kind

    def __len__(self) -> int:
        return self.table.num_rows

    def __iter__(self) -> Iterator:
        names = [f.name for f in fields(self.kind)]
        for start in range(0, len(self), CHUNK):
            for row in self.table.slice(start, CHUNK).select(names).to_pylist():
                yield self.kind(**row)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rows) and self.kind is other.kind and self.table.equals(other.table)

    def column(self, name: str) -> list:
        return self.table[name].to_pylist()


@dataclass(frozen=True)
class SpanSummary:
    """One line of `digitflow labels`; broken, duplicates and conflicts are known once prepared."""
    name: str
    pictures: int
    by_digit: tuple[int, ...]
    broken: int = 0
    duplicates: int = 0
    conflicts: int = 0

    def __str__(self) -> str:
        digits = ", ".join(f"{d}: {n}" for d, n in enumerate(self.by_digit))
        extra = [f"{n} {what}" for n, what in ((self.broken, "broken"), (self.duplicates, "duplicates"),
                                              (self.conflicts, "in conflicts")) if n]
        return ", ".join([f"span {self.name}: {self.pictures} pictures ({digits})", *extra])


@dataclass(frozen=True)
class Span:
    name: str
    folder: Path
    created_at: str  # UTC, ISO 8601
    layout: str  # "digits" (a folder per digit) or "csv" (pictures plus labels.csv)
    files: Rows  # of SpanFile, FILE_SCHEMA; written to files.parquet
    skipped: int = 0  # pictures or CSV rows without a label: left out
    unlabelled: tuple[str, ...] = ()  # pictures present but without a label (hand-made spans)
    labels_csv: str | None = None  # SHA-256 of labels.csv, which must not change either

    @property
    def counts(self) -> tuple[int, ...]:
        return column_counts(self.files.table["label"])

    def summary(self) -> SpanSummary:
        return SpanSummary(self.name, len(self.files), self.counts)

    def write(self, folder: Path) -> None:
        """files.parquet, then span.json: a span has been taken in once its span.json is there."""
        with atomic_path(folder / FILES) as tmp:
            pq.write_table(self.files.table, tmp)
        write_json(folder / MANIFEST, {
            "name": self.name, "created_at": self.created_at, "layout": self.layout,
            "skipped": self.skipped, "unlabelled": list(self.unlabelled),
            "labels_csv": self.labels_csv, "files": FILES})

    @classmethod
    def read(cls, folder: Path) -> "Span":
        record = json.loads((folder / MANIFEST).read_text())
        if record["files"] == FILES:
            table = pq.read_table(folder / FILES).select(FILE_SCHEMA.names).cast(FILE_SCHEMA)
        else:  # spans made before files.parquet: a list of records in span.json
            table = pa.Table.from_pylist(record["files"], schema=FILE_SCHEMA)
        labels = table["label"]
        if record["layout"] not in ("digits", "csv") or pc.any(pc.invert(
                pc.is_in(labels, value_set=pa.array(range(10))))).as_py():
            raise ValueError("unknown layout or a label outside 0..9")
        if record["layout"] == "digits":
            folders = pc.list_element(pc.split_pattern(table["path"], "/", max_splits=1), 0)
            if not pc.all(pc.equal(folders, pc.cast(labels, pa.string()))).as_py():
                raise ValueError("a label that is not its digit folder")
        return cls(str(record["name"]), folder, str(record["created_at"]), record["layout"],
                   Rows(table, SpanFile), int(record.get("skipped", 0)),
                   tuple(record.get("unlabelled", ())), record.get("labels_csv"))


@dataclass(frozen=True)
class SpanStatus:
    """A folder under data/labelled/: the span it holds, or why it cannot be taken in."""
    name: str
    folder: Path
    span: Span | None
    problem: str | None = None


@dataclass(frozen=True, slots=True)  # one per picture: 100,000 in a large span
class _Pick:
    """A picture about to become part of a span."""
    location: Path
    path: str  # in the span
    label: int
    where: str  # where the user gave it, for messages


def check_name(name: str) -> None:
    if not NAME.fullmatch(name):
        raise LabelError(f"{name!r} cannot be a span name: use up to 100 letters, digits, '.', '_' "
                         "and '-', starting with a letter or a digit")


def default_name(source: Path) -> str:
    """`<source folder name>-<UTC time>`, made a valid span name."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", source.resolve().name).strip("-._")[:70] or "span"
    return f"{base}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"


def _shown(paths: list[str]) -> str:
    more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return ", ".join(display_name(p) for p in paths[:SHOWN]) + more


def _relative(file: ImageFile, folder: Path) -> str:
    # The real name (undecodable bytes as surrogates, which JSON keeps), not the display name.
    return Path(file.location).relative_to(folder).as_posix()


def parse_label(cell: str, where: str) -> int | None:
    """The digit in a label cell, or None for a picture left unlabelled."""
    cell = cell.strip()
    if cell.lower() in NOT_LABELLED:
        return None
    if re.fullmatch(r"[0-9](\.0*)?", cell):  # pandas writes 7.0 in a label column with gaps
        return int(float(cell))
    raise LabelError(f"{where}: label {cell!r} is not a digit 0–9; write the digit, or leave the "
                     "cell empty (or 'skip') to leave the picture out")


def read_labels_csv(labels: Path,
                    folder: Path) -> tuple[list[_Pick], list[str], dict[str, Path]]:
    """The labelled rows of a path,label CSV about pictures under `folder`, the paths of the rows
    left unlabelled, and the pictures answered "not a digit" (path → file; those that are there).
    Refuses rows that name no picture there or give no digit."""
    try:
        text = labels.read_text(encoding="utf-8-sig")  # a spreadsheet's byte-order mark is no column
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"cannot read {labels}: {getattr(exc, 'strerror', None) or exc}") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    columns = [c.strip().lower() for c in header]
    if "path" not in columns or "label" not in columns:
        raise LabelError(f"{labels} needs the columns path and label (it has: "
                         f"{', '.join(header) or 'no header'}); other columns may stay")
    path_at, label_at = columns.index("path"), columns.index("label")
    inside = folder.resolve()

    def within(path: str) -> bool:
        pure = PurePosixPath(path)
        return bool(path) and not pure.is_absolute() and ".." not in pure.parts \
            and (folder / pure).resolve().is_relative_to(inside)

    picks: dict[str, _Pick] = {}
    lines: dict[str, int] = {}
    unlabelled, refused = [], {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        cells = row + [""] * (len(columns) - len(row))
        where = f"{labels} line {line}"
        path = cells[path_at].strip()
        label = parse_label(cells[label_at], f"{where} ({path})")
        pure = PurePosixPath(path)
        location = folder / pure
        if label is None:
            unlabelled.append(path)
            if cells[label_at].strip().lower() == NOT_A_DIGIT and within(path) \
                    and location.is_file():
                refused[pure.as_posix()] = location
            continue
        if not within(path):
            raise LabelError(f"{where}: path {path!r} is not a picture inside {folder}")
        if pure.suffix.lower() not in EXTENSIONS:
            raise LabelError(f"{where}: {path} is not an image file digitflow reads "
                             f"({', '.join(sorted(EXTENSIONS))})")
        if not location.is_file():
            raise LabelError(f"{where}: {path} is not in {folder}; fix the path, or remove the row")
        key = pure.as_posix()
        if key in picks and picks[key].label != label:
            raise LabelError(f"{where}: {path} is labelled {label}, but line {lines[key]} labels it "
                             f"{picks[key].label}; keep one row")
        lines.setdefault(key, line)
        picks.setdefault(key, _Pick(location, key, label, f"{path} ({where})"))
    return list(picks.values()), unlabelled, refused


def _record_files(folder: Path, entries: list[tuple[str, int]]) -> Rows:
    """Hash each (path, label) under `folder` and note its stamp, so take_in can skip rehashing."""
    newest = max(((folder / path).stat().st_mtime_ns for path, _ in entries), default=0)
    # As tasks.store.write_manifest: a stamp taken this long after the newest write cannot match
    # any later write.
    time.sleep(max(0, newest + TICK_NS - time.time_ns()) / 1e9)
    chunks = []
    for start in range(0, len(entries), CHUNK):
        records = []
        for path, label in entries[start:start + CHUNK]:
            location = folder / path
            before = stamp(location)
            sha = file_sha256(location)
            settled = before is not None and before == stamp(location)  # not written while hashed
            records.append({"path": path, "label": label, "sha256": sha,
                            "size": location.stat().st_size, "stamp": before if settled else None})
        chunks.append(pa.Table.from_pylist(records, schema=FILE_SCHEMA))
    return Rows(pa.concat_tables(chunks) if chunks else FILE_SCHEMA.empty_table(), SpanFile)


def _refuse_conflicts(picks: list[_Pick], hashes: list[str],
                      taken: dict[str, list[tuple[str, int]]]) -> None:
    """Refuse the same bytes labelled two ways, in this batch or against the spans taken in."""
    by_sha: dict[str, list[_Pick]] = defaultdict(list)
    for pick, sha in zip(picks, hashes):
        by_sha[sha].append(pick)
    clashes = []
    for sha, group in by_sha.items():
        if len({p.label for p in group}) > 1:
            clashes.append(" and ".join(f"{p.where} labelled {p.label}" for p in group))
            continue
        label = group[0].label
        clashes += [f"{group[0].where} labelled {label}, but {where} labelled {other}"
                    for where, other in taken.get(sha, []) if other != label]
    if clashes:
        more = f"\n  and {len(clashes) - SHOWN} more" if len(clashes) > SHOWN else ""
        listed = "\n  ".join(clashes[:SHOWN]) + more
        raise LabelError(f"the same picture (the same bytes) has two labels:\n  {listed}\nFix the "
                         "label, or leave that file out (an empty or 'skip' label in the CSV, or "
                         "remove it from the folder), and run `digitflow label` again.")


def make_span(labelled: Path, source: Path, *, labels: Path | None = None,
              digit: int | None = None, name: str | None = None) -> Span:
    """Copy the labelled pictures of `source` into a new span `labelled/<name>` (whole or absent).

    `labels`: a path,label CSV (paths relative to `source`); `digit`: every picture under `source`
    shows this digit. Exactly one of them.
    """
    if (labels is None) == (digit is None):
        raise LabelError("give either a labels CSV (--labels) or the one digit of the whole folder "
                         "(--digit)")
    if digit is not None and digit not in range(10):
        raise LabelError(f"--digit must be a digit 0..9, not {digit!r}")
    if not source.is_dir():
        raise LabelError(f"{source} is not a folder of pictures")
    name = default_name(source) if name is None else name
    check_name(name)
    if os.path.lexists(labelled / name):
        raise LabelError(f"span {name} already exists in {labelled}; spans never change once made: "
                         "choose another name with --span NAME")
    if digit is not None:
        images = list_images(source)
        picks = [_Pick(Path(f.location), f"{digit}/{_relative(f, source)}", digit, str(source / f.path))
                 for f in images if f.problem is None]
        skipped = len(images) - len(picks)  # symbolic links leading outside the folder
        layout = "digits"
    else:
        picks, unlabelled, refused = read_labels_csv(labels, source)
        skipped = len(unlabelled)
        layout = "csv"
    if not picks:
        found = f"all {skipped} pictures or rows are unlabelled" if skipped else "no image files"
        if layout == "csv" and refused:
            _remember(labelled, refused, labels)
            found += (f" ({len(refused)} answered {NOT_A_DIGIT!r}, which no review will ask "
                      f"about again: {labelled / NOT_DIGITS})")
        raise LabelError(f"no usable picture in {source}: {found}")
    hashes = [file_sha256(p.location) for p in picks]
    taken, batch = defaultdict(list), pa.array(hashes)
    for status in list_spans(labelled):
        if status.span:
            files = status.span.files.table
            same = files.filter(pc.is_in(files["sha256"], value_set=batch))
            for f in Rows(same, SpanFile):
                taken[f.sha256].append((f"{f.path} in span {status.name}", f.label))
    _refuse_conflicts(picks, hashes, taken)
    span = _build_span(labelled, name, layout, picks, hashes, skipped)
    if layout == "csv" and refused:
        _remember(labelled, refused, labels)
    return span


def _remember(labelled: Path, refused: dict[str, Path], labels: Path) -> None:
    """A labels CSV's "not a digit" answers, kept once the command has done the rest."""
    with spans_locked(labelled):
        remember_not_digits(labelled, {file_sha256(f): path for path, f in refused.items()},
                            f"labels CSV {labels}")


def _build_span(labelled: Path, name: str, layout: str, picks: list[_Pick], hashes: list[str],
                skipped: int) -> Span:
    # Built in a hidden folder and renamed into place: a killed command leaves no half span, and
    # list_spans ignores hidden folders.
    labelled.mkdir(parents=True, exist_ok=True)
    building = labelled / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    building.mkdir()
    try:
        for pick in picks:
            target = building / pick.path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pick.location, target)
        files = _record_files(building, [(p.path, p.label) for p in picks])
        moved = [p.where for p, now, sha in zip(picks, files.column("sha256"), hashes) if now != sha]
        if moved:
            raise LabelError(f"{_shown(moved)} changed while being copied; run `digitflow label` "
                             "again when nothing is writing to them")
        labels_sha = None
        if layout == "csv":
            with open(building / LABELS_CSV, "w", newline="") as out:
                writer = csv.writer(out, lineterminator="\n")
                writer.writerow(["path", "label"])
                writer.writerows(sorted(zip(files.column("path"), files.column("label"))))
            labels_sha = file_sha256(building / LABELS_CSV)
        span = Span(name, labelled / name, datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    layout, files, skipped, (), labels_sha)
        span.write(building)
        try:
            os.rename(building, labelled / name)
        except OSError as exc:
            if os.path.lexists(labelled / name):  # another `digitflow label` took the name first
                raise LabelError(f"span {name} already exists in {labelled}; choose another "
                                 "name") from exc
            raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return span


def take_in(folder: Path) -> Span:
    """The span in `folder`, checked unchanged since it was taken in; a span made by hand (no
    span.json yet) is read from its layout, hashed, and fixed from now on by writing span.json."""
    if not folder.is_dir():
        raise LabelError(f"{folder} is not a span folder")
    if not (folder / MANIFEST).exists():
        return _take_in_by_hand(folder)
    try:
        span = Span.read(folder)
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        raise LabelError(f"span {folder.name}: its {MANIFEST} cannot be read ({exc}); restore it "
                         "from where the span came from") from exc
    if span.name != folder.name:
        raise SpanChanged(f"span {folder.name} was taken in as {span.name}: a span keeps its name "
                          "(models record it); rename the folder back")
    _check_unchanged(span)
    return span


def _check_unchanged(span: Span) -> None:
    modified, missing = [], []
    for f in span.files:
        location = span.folder / f.path
        try:
            now = stamp(location)
            if f.stamp is not None and now == f.stamp:
                continue  # untouched since it was hashed
            if location.stat().st_size != f.size or file_sha256(location) != f.sha256:
                modified.append(f.path)
        except FileNotFoundError:
            missing.append(f.path)
        except OSError:
            modified.append(f.path)  # unreadable now: not what was taken in
    added = []
    expected = len(span.files) + len(span.unlabelled)
    # Counted first, compared by name only when something is off: no set of 100,000 names.
    if missing or sum(1 for _ in iter_images(span.folder)) != expected:
        known = set(span.files.column("path")) | set(span.unlabelled)
        added = sorted(p for p in (_relative(f, span.folder) for f in iter_images(span.folder))
                       if p not in known)
    changes = [f"{what}: {_shown(paths)}" for what, paths in
               (("modified", modified), ("missing", missing), ("added", added)) if paths]
    csv_file = span.folder / LABELS_CSV
    if (file_sha256(csv_file) if csv_file.is_file() else None) != span.labels_csv:
        changes.append(f"{LABELS_CSV} " + ("changed" if span.labels_csv and csv_file.is_file()
                                           else "removed" if span.labels_csv else "added"))
    if changes:
        raise SpanChanged(f"span {span.name} has changed since it was taken in ({'; '.join(changes)}). "
                          + TO_FIX_CHANGED)


def _take_in_by_hand(folder: Path) -> Span:
    name = folder.name
    images = list_images(folder)
    outside = [f.path for f in images if f.problem]
    if outside:
        raise LabelError(f"span {name}: {_shown(outside)} are symbolic links leading outside the "
                         "span; put the pictures themselves in it")
    paths = [_relative(f, folder) for f in images]
    in_digits = [p for p in paths if "/" in p and p.split("/")[0] in DIGITS]
    has_csv = (folder / LABELS_CSV).is_file()
    if has_csv and in_digits:
        digits = sorted({p.split("/")[0] + "/" for p in in_digits})
        raise LabelError(f"span {name} has both digit folders with pictures ({', '.join(digits)}) and "
                         f"a {LABELS_CSV}, so its labels are ambiguous: keep one way, remove "
                         f"{LABELS_CSV} or move the pictures out of the digit folders")
    if has_csv:
        picks, _, _ = read_labels_csv(folder / LABELS_CSV, folder)
        entries = [(p.path, p.label) for p in picks]
        given = {p.path for p in picks}
        unlabelled = tuple(p for p in paths if p not in given)
        layout, labels_sha = "csv", file_sha256(folder / LABELS_CSV)
    else:
        stray = [p for p in paths if p not in in_digits]
        if stray:
            raise LabelError(f"span {name}: {_shown(stray)} not in a digit folder 0..9; move each "
                             f"picture into the folder of its digit, or label them in a {LABELS_CSV}")
        entries = [(p, int(p.split("/")[0])) for p in paths]
        unlabelled, layout, labels_sha = (), "digits", None
    if not entries:
        raise LabelError(f"span {name} holds no labelled picture: put pictures in digit folders "
                         f"0..9, or pictures and a {LABELS_CSV} with path,label")
    span = Span(name, folder, datetime.now(timezone.utc).isoformat(timespec="seconds"), layout,
                _record_files(folder, entries), len(unlabelled), unlabelled, labels_sha)
    span.write(folder)
    return span


def list_spans(labelled: Path) -> list[SpanStatus]:
    """Every span under `labelled`, by name, each taken in or with its problem: one bad span
    hides none of the others."""
    if not labelled.is_dir():
        return []
    statuses = []
    for folder in sorted(labelled.iterdir(), key=lambda p: p.name):
        if folder.name.startswith(".") or not folder.is_dir():
            continue  # spans being made, and whatever else is not a span
        try:
            check_name(folder.name)
            statuses.append(SpanStatus(folder.name, folder, take_in(folder)))
        except (LabelError, OSError) as exc:
            statuses.append(SpanStatus(folder.name, folder, None, str(exc)))
    return statuses


@dataclass(frozen=True)
class Copy:
    """One labelled picture file in a span."""
    span: str
    path: str
    sha256: str
    label: int

    @property
    def where(self) -> str:
        return f"{self.span}/{self.path}"

    @property
    def split(self) -> str:
        return split_of(self.sha256)


COPY_SCHEMA = pa.schema([("span", pa.string()), ("path", pa.string()), ("sha256", pa.string()),
                         ("label", pa.int64())])


@dataclass(frozen=True)
class Conflict:
    """The same bytes under two or more labels: every copy is left out."""
    sha256: str
    copies: tuple[Copy, ...]

    def __str__(self) -> str:
        labels = " and ".join(str(n) for n in sorted({c.label for c in self.copies}))
        copies = ", ".join(f"{display_name(c.where)} ({c.label})" for c in self.copies)
        return f"the same picture labelled {labels}: {copies}"


@dataclass(frozen=True)
class Fingerprint:
    """What a prepared set is made of: changes with any span, kept when nothing changed."""
    train: str  # content_key of the sorted (sha256, label) pairs in the split
    test: str
    spans: tuple[str, ...]

    @property
    def key(self) -> str:
        return content_key(self.train, self.test, list(self.spans))


@dataclass(frozen=True)
class LabelledSet:
    pictures: Rows  # of Copy: kept, one per content, sorted by sha256; with a split column
    duplicates: Rows  # of Copy: more copies of a kept picture, with its label: counted once
    conflicts: tuple[Conflict, ...]
    spans: tuple[str, ...]
    fingerprint: Fingerprint

    def split(self, name: str) -> Rows:
        table = self.pictures.table
        return Rows(table.filter(pc.equal(table["split"], name)), Copy)


def _split_column(sha256: pa.ChunkedArray) -> pa.ChunkedArray:
    return pa.chunked_array([pa.array([split_of(s) for s in sha256.slice(start, CHUNK).to_pylist()],
                                      pa.string()) for start in range(0, len(sha256), CHUNK)],
                            pa.string())


def _pairs_key(pictures: pa.Table) -> str:
    """content_key([[sha256, label], ...]) of the rows (their JSON, hashed), without the list."""
    digest = hashlib.sha256(b"[[")
    for start in range(0, pictures.num_rows, CHUNK):
        chunk = pictures.slice(start, CHUNK)
        pairs = ", ".join(f'["{sha}", {label}]' for sha, label in
                          zip(chunk["sha256"].to_pylist(), chunk["label"].to_pylist()))
        digest.update(((", " if start else "") + pairs).encode())
    digest.update(b"]]")
    return digest.hexdigest()[:16]


def labelled_set(spans: list[Span]) -> LabelledSet:
    """All spans' pictures, each content once; the same content with two labels left out.
    Of the copies of one content, the first by span name and path is kept."""
    tables = [span.files.table.select(["path", "sha256", "label"]).add_column(
        0, "span", pa.repeat(pa.scalar(span.name), len(span.files))) for span in spans]
    every = pa.concat_tables(tables).cast(COPY_SCHEMA) if tables else COPY_SCHEMA.empty_table()
    every = every.sort_by([("sha256", "ascending"), ("span", "ascending"), ("path", "ascending")])
    labels = every.group_by("sha256").aggregate([("label", "count_distinct")])
    clashing = labels.filter(pc.greater(labels["label_count_distinct"], 1))["sha256"]
    in_conflict = pc.is_in(every["sha256"], value_set=clashing.combine_chunks())
    groups: dict[str, list[Copy]] = defaultdict(list)
    for copy in Rows(every.filter(in_conflict), Copy):
        groups[copy.sha256].append(copy)
    conflicts = tuple(Conflict(sha, tuple(copies)) for sha, copies in groups.items())
    rest = every.filter(pc.invert(in_conflict))
    row = pa.array(np.arange(rest.num_rows))
    firsts = rest.append_column("row", row).group_by("sha256").aggregate([("row", "min")])
    first = pc.is_in(row, value_set=firsts["row_min"].combine_chunks())
    kept = rest.filter(first)
    kept = kept.append_column("split", _split_column(kept["sha256"]))
    keys = {split: _pairs_key(kept.filter(pc.equal(kept["split"], split))) for split in SPLITS}
    names = tuple(sorted(s.name for s in spans))
    return LabelledSet(Rows(kept, Copy), Rows(rest.filter(pc.invert(first)), Copy), conflicts, names,
                       Fingerprint(keys["train"], keys["test"], names))


@dataclass(frozen=True, slots=True)  # one per picture: 100,000 in a large span
class Broken:
    span: str
    path: str
    error: str


@dataclass(frozen=True)
class PreparedPictures:
    folder: Path
    train: tuple[int, ...]  # usable pictures per digit in x_train.npy
    test: tuple[int, ...]
    spans: tuple[SpanSummary, ...]
    conflicts: tuple[Conflict, ...]
    broken: tuple[Broken, ...]
    fingerprint: Fingerprint

    @property
    def files(self) -> dict[str, Path]:
        """Everything written, by name (as tasks.store.cached_step records them)."""
        arrays = {f"{xy}_{split}": self.folder / f"{xy}_{split}.npy" for split in SPLITS for xy in "xy"}
        return {**arrays, "pictures": self.folder / "pictures.parquet"}


REPORT_SCHEMA = pa.schema([("span", pa.string()), ("path", pa.string()), ("sha256", pa.string()),
                           ("label", pa.int64()), ("split", pa.string()), ("status", pa.string()),
                           ("error", pa.string()), ("row", pa.int64())])


def _write_split(pictures: Rows, spans_root: Path, folder: Path, split: str) -> pa.Table:
    """Decode `pictures` chunk by chunk into x_<split>.npy and y_<split>.npy; their rows of the
    report: each usable picture with its row in the arrays, each broken one with its error."""
    x_path = folder / f"x_{split}.npy"
    # Preallocated on disk and mapped one chunk at a time: only a chunk of inputs is ever in
    # memory, and the pages written are unmapped after each chunk (a map held open keeps every
    # written page in the process's resident memory: +215 MiB at 100,000 pictures, measured).
    np.lib.format.open_memmap(x_path, mode="w+", dtype=np.float32,
                              shape=(len(pictures), *IMAGE_SHAPE)).flush()
    digits = np.empty(len(pictures), np.uint8)  # as MNIST's labels
    used, parts = 0, []
    for start in range(0, len(pictures), CHUNK):
        copies = list(Rows(pictures.table.slice(start, CHUNK), Copy))
        files = [ImageFile(display_name(c.where), str(spans_root / c.span / c.path)) for c in copies]
        report, images = [], []
        for copy, (sha, image, error) in zip(copies, read_images(files)):
            if error is None and sha != copy.sha256:
                error = "changed since its span was taken in"
            row = None if error else used + len(images)
            report.append({"span": copy.span, "path": display_name(copy.path), "sha256": copy.sha256,
                           "label": copy.label, "split": None if error else split,
                           "status": "error" if error else "ok", "error": error, "row": row})
            if error is None:
                digits[row] = copy.label
                images.append(image)
        if images:
            x = np.load(x_path, mmap_mode="r+")
            x[used:used + len(images)] = np.stack(images)
            x.flush()
            del x
        used += len(images)
        parts.append(pa.Table.from_pylist(report, schema=REPORT_SCHEMA))
    if used < len(pictures):  # broken files left rows unused at the end: drop them
        full = np.load(x_path, mmap_mode="r")
        trimmed = np.lib.format.open_memmap(folder / f".x_{split}.trim.npy", mode="w+",
                                            dtype=np.float32, shape=(used, *IMAGE_SHAPE))
        for start in range(0, used, CHUNK):
            end = min(start + CHUNK, used)
            trimmed[start:end] = full[start:end]
        trimmed.flush()
        del full, trimmed
        os.replace(folder / f".x_{split}.trim.npy", x_path)
    np.save(folder / f"y_{split}.npy", digits[:used])
    return pa.concat_tables(parts) if parts else REPORT_SCHEMA.empty_table()


def _duplicate_rows(duplicates: Rows, kept: pa.Table) -> pa.Table:
    """The report's rows for duplicates: each with its kept picture's split, row and status."""
    original = kept.select(["sha256", "span", "path", "split", "status", "error", "row"]) \
        .rename_columns(["sha256", "kept_span", "kept_path", "split", "kept_status", "kept_error",
                         "row"])
    joined = duplicates.table.join(original, "sha256")
    parts = []
    for start in range(0, joined.num_rows, CHUNK):
        report = []
        for r in joined.slice(start, CHUNK).to_pylist():
            same = f"same bytes as {r['kept_span']}/{r['kept_path']}"
            broken = r["kept_status"] == "error"
            report.append({"span": r["span"], "path": display_name(r["path"]), "sha256": r["sha256"],
                           "label": r["label"], "split": r["split"],
                           "status": "error" if broken else "duplicate",
                           "error": (f"{r['kept_error']} ({same})" if broken
                                     else f"{same}: counted once"),
                           "row": r["row"]})
        parts.append(pa.Table.from_pylist(report, schema=REPORT_SCHEMA))
    return pa.concat_tables(parts) if parts else REPORT_SCHEMA.empty_table()


def _conflict_rows(conflicts: tuple[Conflict, ...]) -> pa.Table:
    rows = [{"span": c.span, "path": display_name(c.path), "sha256": c.sha256, "label": c.label,
             "status": "conflict", "error": str(conflict)}
            for conflict in conflicts for c in conflict.copies]
    return pa.Table.from_pylist(rows, schema=REPORT_SCHEMA)


def _counts(column: pa.ChunkedArray) -> Counter:
    return Counter({v["values"]: v["counts"] for v in pc.value_counts(column).to_pylist()})


def prepare_pictures(labelled: LabelledSet, spans_root: Path, out: Path) -> PreparedPictures:
    """Every kept picture as the model's 28×28 input, in x/y arrays per split, plus
    pictures.parquet: one row per picture file with its status (ok, error, duplicate, conflict).

    `out` is written whole or not at all; a broken file is a row with its reason, not a failure.
    """
    if not labelled.pictures:
        why = ("every picture is in a conflict:\n  " + "\n  ".join(map(str, labelled.conflicts[:SHOWN]))
               if labelled.conflicts else "they hold no pictures")
        raise LabelError(f"no usable picture in spans {', '.join(labelled.spans) or '(none)'}: {why}")
    out.parent.mkdir(parents=True, exist_ok=True)
    building = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    building.mkdir()
    try:
        kept = pa.concat_tables([_write_split(labelled.split(split), spans_root, building, split)
                                 for split in SPLITS])
        table = pa.concat_tables([kept, _duplicate_rows(labelled.duplicates, kept),
                                  _conflict_rows(labelled.conflicts)])
        table = table.sort_by([("span", "ascending"), ("path", "ascending")])
        errors = table.filter(pc.equal(table["status"], "error")).select(["span", "path", "error"])
        broken = tuple(Broken(**r) for r in errors.to_pylist())
        usable = kept.filter(pc.equal(kept["status"], "ok"))
        if not usable.num_rows:
            listed = "\n  ".join(f"{b.span}/{b.path}: {b.error}" for b in broken[:SHOWN])
            raise LabelError(f"no usable picture in spans {', '.join(labelled.spans)}: every picture "
                             f"is broken or in a conflict:\n  {listed}")
        pq.write_table(table, building / "pictures.parquet")
        summaries = []
        for name in labelled.spans:
            mine = table.filter(pc.equal(table["span"], name))
            status = _counts(mine["status"])
            summaries.append(SpanSummary(name, mine.num_rows, column_counts(mine["label"]),
                                         status["error"], status["duplicate"], status["conflict"]))
        _move_into_place(building, out)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    by_split = {split: column_counts(usable.filter(pc.equal(usable["split"], split))["label"])
                for split in SPLITS}
    return PreparedPictures(out, by_split["train"], by_split["test"], tuple(summaries),
                            labelled.conflicts, broken, labelled.fingerprint)


def _move_into_place(building: Path, out: Path) -> None:
    try:
        os.rename(building, out)
    except OSError:
        if not out.is_dir():
            raise
        # An earlier whole copy is there: swapped out, so a reader finds a whole copy or none.
        old = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.old"
        os.rename(out, old)
        os.rename(building, out)
        shutil.rmtree(old, ignore_errors=True)
