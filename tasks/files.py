"""Finding the image files under a folder, and reading them in worker processes.

Reading is decoding and preprocessing: the CPU-bound part of scoring. It runs in a pool of
`spawn`ed processes, one per core, that import Pillow, SciPy and NumPy but never TensorFlow (this
module must not import it), so the process holding the model is never forked. Listing files
imports neither Pillow nor SciPy (0.35 s): a cached training run lists your spans, reads nothing.
"""

import ctypes
import hashlib
import importlib
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.mnist import IMAGE_SHAPE

# What scanners, phones and cameras write: SANE's scanimage writes PNM, many Android phones AVIF.
# HEIF (iPhones) is listed so that each such photo is an error row saying how to convert it, not
# silently left out: Pillow has no HEIF decoder.
EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".tif", ".tiff", ".webp",
                        ".gif", ".avif", ".pbm", ".pgm", ".ppm", ".pnm", ".heic", ".heif"})
MAX_FILE_BYTES = 256 * 1024 * 1024  # a digit image is kilobytes; anything this big is refused
OUTSIDE_LINK = "symbolic link leads outside the folder; not followed"
WORKERS = os.cpu_count() or 1  # reader processes: one per core
PARALLEL_FROM = 200  # fewer files than this are read in-process: a pool costs ~1 s to start
READ_AHEAD = 10_000  # files a command reads before its flow asks: about 33 MB of results held
# The readers yield the CPU to the flow's process and Prefect's server, which the whole run waits
# on: read ahead at nice 0, they slowed the temporary server's start more than they saved
# (2,000 scans end to end, 5 runs each: 18.6 s at nice 0, 16.3 s at 10, 16.1 s at 19).
READER_NICENESS = 10
AHEAD_BATCH = 50  # files per read-ahead batch


@dataclass(frozen=True)
class ImageFile:
    path: str  # relative to the folder, "/"-separated, printable (as in the table)
    location: str  # what open() needs, undecodable bytes and all
    problem: str | None = None  # known before reading: the file is an error row


class Files:
    """Image files handed to a Prefect task as one value. Prefect walks lists and dataclasses
    looking for futures, which for thousands of files costs the flow most of a core; a plain
    object it leaves alone. (Prefect's quote() does that too, but does not survive Dask.)"""

    def __init__(self, files: list[ImageFile]):
        self.files = files


def display_name(relative: str) -> str:
    # File names that are not UTF-8 reach Python as surrogate escapes, which Parquet cannot store.
    return os.fsencode(relative).decode("utf-8", "backslashreplace").replace(os.sep, "/")


def list_images(folder: Path) -> list[ImageFile]:
    """Every image file under `folder`, recursively, by extension in any case; sorted by path."""
    return sorted(iter_images(folder), key=lambda f: f.path)


def iter_images(folder: Path) -> Iterator[ImageFile]:
    """list_images in the order the folders are read, one at a time. A folder that cannot be read
    is skipped, as os.walk does; a linked folder is never entered: no loops, no escapes."""
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder of images")
    root = folder.resolve()
    prefix = len(os.path.join(folder, ""))  # every entry's path starts with it

    def image(location: str, problem: str | None) -> ImageFile:
        return ImageFile(display_name(location[prefix:]), location, problem)

    # os.scandir, not os.walk, which leaves telling links apart to an lstat per file: listing
    # 30,000 PNGs took about 6 µs per file that way, 2.6–3.5 this way (bench/listing.py)
    pending = [os.fspath(folder)]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            is_image = not is_dir and os.path.splitext(entry.name)[1].lower() in EXTENSIONS
            if not entry.is_symlink():
                if is_dir:
                    pending.append(entry.path)
                elif is_image:
                    yield image(entry.path, None)
            elif is_dir or is_image:
                outside = not Path(entry.path).resolve().is_relative_to(root)
                if is_image or outside:
                    yield image(entry.path, OUTSIDE_LINK if outside else None)


def read_image(file: ImageFile) -> tuple[str | None, np.ndarray | None, str | None]:
    """(sha256, model input, error) for one file; never raises for a bad file."""
    from tasks.images import ImageError, preprocess  # see the module's docstring

    if file.problem:
        return None, None, file.problem
    try:
        data = read_bytes(file.location, MAX_FILE_BYTES + 1)
    except OSError as exc:
        return None, None, f"cannot read file: {exc.strerror or exc}"
    if len(data) > MAX_FILE_BYTES:
        reason = f"file larger than {MAX_FILE_BYTES // 2**20} MiB; not an image to score"
        try:  # the sha256 column is the whole file's, as for every other row
            with open(file.location, "rb") as f:
                return hashlib.file_digest(f, "sha256").hexdigest(), None, reason
        except OSError:
            return None, None, reason
    sha = hashlib.sha256(data).hexdigest()
    try:
        return sha, preprocess(data), None
    except ImageError as exc:
        return sha, None, str(exc)
    except Exception as exc:  # a decoder's own bug is still this file's error row, not the run's
        return sha, None, f"could not prepare the image: {type(exc).__name__}: {exc}"


def read_bytes(location: str, limit: int) -> bytes:
    """open(location, "rb").read(limit), without its file objects: 2.9 µs against 6.2 a 28×28
    PNG (bench/listing.py)."""
    fd = os.open(location, os.O_RDONLY)
    try:
        # Sized by the file, not the limit: a 256 MiB buffer per call cost 0.06 ms per image.
        wanted = min(os.fstat(fd).st_size + 1, limit)
        data = os.read(fd, wanted)
        # Until the end of the file: one read may return less (some network file systems do).
        while len(data) < wanted and (more := os.read(fd, wanted - len(data))):
            data += more
        return data
    finally:
        os.close(fd)


# What a batch's results cross back in: (sha256, error, index into the inputs or -1) per file,
# and every input in one array. Pickling and unpickling a 28×28 PNG's result took about 6 µs
# with one array per picture, 3–4 µs this way (bench/listing.py).
Packed = tuple[list[tuple[str | None, str | None, int]], np.ndarray]


def pack(results: list[tuple]) -> Packed:
    rows, inputs = [], []
    for sha, x, error in results:
        rows.append((sha, error, len(inputs) if x is not None else -1))
        if x is not None:
            inputs.append(x)
    return rows, np.stack(inputs) if inputs else np.empty((0, *IMAGE_SHAPE), dtype=np.float32)


def unpacked(packed: Packed, place: int) -> tuple[str | None, np.ndarray | None, str | None]:
    """The read_image result of the file at `place` in the batch."""
    sha, error, index = packed[0][place]
    return sha, packed[1][index] if index >= 0 else None, error


def _read_batch(rows: list[tuple]) -> Packed:
    # Plain tuples cross to the worker processes: pickling a dataclass costs 7× as much.
    return pack([read_image(ImageFile(*row)) for row in rows])


def _read_ahead_batch(rows: list[tuple]) -> tuple[list[tuple[int, int] | None], Packed]:
    """_read_batch, with each file's (size, mtime) from before it was read."""
    stamps = [stamp(row[1]) for row in rows]
    return stamps, _read_batch(rows)


def stamp(location: str) -> tuple[int, int] | None:
    try:
        status = os.stat(location)
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns


def _start_reader() -> None:
    importlib.import_module("tasks.images")  # Pillow and SciPy, before the first batch needs them


# glibc's malloc, as a reader process uses it: arrays up to 32 MiB from the heap, and up to 64 MiB
# of freed heap kept, not returned to the kernel after every picture to be faulted back in for the
# next. The readers' CPU per scan, 2,000 against 6,000 demo scans: 2.39–2.41 ms with these, 2.43–
# 2.45 without (docs/BENCHMARKS.md).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # mallopt(3)'s option numbers
MALLOC_OPTIONS = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 64 << 20, M_TOP_PAD: 16 << 20}


def _reader_started() -> None:
    os.nice(READER_NICENESS)
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return  # not glibc (macOS, musl): its own allocator's defaults
    for option, value in MALLOC_OPTIONS.items():
        mallopt(option, value)


_pool: ProcessPoolExecutor | None = None
_starting = threading.Lock()  # a read-ahead's thread and the flow may both ask for the pool


def worker_pool() -> ProcessPoolExecutor:
    """One pool per process, started on first use and reused by every chunk."""
    global _pool
    with _starting:
        if _pool is None:
            _pool = ProcessPoolExecutor(max_workers=WORKERS,
                                        mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_reader_started)
        return _pool


def start_readers() -> None:
    """Start the reader processes now, so they import while the caller does other work."""
    if not multiprocessing.current_process().daemon:
        pool = worker_pool()
        for _ in range(WORKERS):
            pool.submit(_start_reader)  # each idle worker spawns, imports what reading needs


def stop_readers() -> None:
    """Stop the reader processes once their running batches end, and drop the read-ahead: what
    they have not started of it is cancelled, so that a run that failed early exits now."""
    global _pool, _ahead
    if _ahead is not None:
        _ahead.listing.join()  # it may still be submitting
        for future, _ in _ahead.read.values():
            future.cancel()  # unless it has started
        _ahead = None
    if _pool is not None:
        _pool.shutdown(wait=False)
        _pool = None


def batches(rows: list) -> list[list]:
    size = max(1, -(-len(rows) // (4 * WORKERS)))  # a few batches per core, for balance
    return [rows[i:i + size] for i in range(0, len(rows), size)]


class ReadAhead:
    """The first files under a folder, read by the reader processes before a flow asks for them.

    A command's flow cannot start until Prefect is imported and, without a running server, until
    Prefect's temporary server answers: 3 to 9 s, with a core mostly idle. Meanwhile the readers
    read what the flow will want first (files in its order); its chunks then take those results,
    each only if the file's size and modification time are still what they were when it was read.
    """

    def __init__(self, folder: Path, limit: int):
        self.read: dict[str, tuple[Future, int]] = {}  # location → its batch, its place in it
        self.listing = threading.Thread(target=self.start, args=(folder, limit), daemon=True)
        self.listing.start()

    def start(self, folder: Path, limit: int) -> None:
        try:
            files = list_images(folder)
        except OSError:
            return  # the flow lists the folder too, and says what is wrong with it
        if len(files) < PARALLEL_FROM:
            return  # read in-process: no pool at all
        start_readers()
        rows = [(f.path, f.location, f.problem) for f in files[:limit]]
        # Small batches: a run that fails early waits only for the few being read (stop_readers)
        for batch in (rows[i:i + AHEAD_BATCH] for i in range(0, len(rows), AHEAD_BATCH)):
            future = worker_pool().submit(_read_ahead_batch, batch)
            for place, row in enumerate(batch):
                self.read[row[1]] = (future, place)

    def claim(self, file: ImageFile) -> tuple[Future, int] | None:
        """Where the file's result will be if it is being read ahead (taken(), once), else None."""
        self.listing.join()
        return self.read.pop(file.location, None)


def taken(entry: tuple[Future, int], file: ImageFile) -> tuple | None:
    """The read-ahead result of a file claimed, if the file has not changed since; else None."""
    future, place = entry
    stamps, packed = future.result()
    before = stamps[place]
    return unpacked(packed, place) if before is not None and before == stamp(file.location) else None


_ahead: ReadAhead | None = None


def read_ahead(folder: Path, limit: int = READ_AHEAD) -> None:
    """Start the reader processes if `folder` holds enough files to need them, and read the first
    `limit` of them ahead (ReadAhead); replaces what an earlier call read ahead."""
    global _ahead
    if not multiprocessing.current_process().daemon:
        _ahead = ReadAhead(folder, limit)


def read_images(files: list[ImageFile]) -> list[tuple[str | None, np.ndarray | None, str | None]]:
    """read_image for every file, in order; spread over all cores when there are enough."""
    return start_reading(files)()


def start_reading(files: list[ImageFile]) -> Callable[[], list[tuple]]:
    """read_images(files), begun: the reader processes start on the files now, while the caller
    goes on with other work; what this returns waits for them and gives read_images' list."""
    claimed = [_ahead.claim(f) for f in files] if _ahead is not None else [None] * len(files)
    todo = [i for i, entry in enumerate(claimed) if entry is None]
    # A Dask worker is a daemonic process, which may not start children: there the cluster's
    # workers are the parallelism.
    reading = None
    if not multiprocessing.current_process().daemon and len(todo) >= PARALLEL_FROM:
        rows = [(files[i].path, files[i].location, files[i].problem) for i in todo]
        reading = worker_pool().map(_read_batch, batches(rows))  # submitted now

    def results() -> list[tuple]:
        read = ([read_image(files[i]) for i in todo] if reading is None else
                [unpacked(packed, place) for packed in reading for place in range(len(packed[0]))])
        found = [None if entry is None else taken(entry, file) for entry, file in zip(claimed, files)]
        for i, result in zip(todo, read):
            found[i] = result
        # (None: a file that changed after it was read ahead, read again)
        return [result or read_image(file) for result, file in zip(found, files)]

    return results
