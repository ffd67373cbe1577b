"""Finding the image files under a folder, and reading them in worker processes.

Reading is decoding and preprocessing: the CPU-bound part of scoring. It runs in a pool of
`spawn`ed processes, one per core, that import Pillow, SciPy and NumPy but never TensorFlow (this
module must not import it), so the process holding the model is never forked. Listing files
imports neither Pillow nor SciPy (0.35 s): a cached training run lists your spans, reads nothing.
"""

import hashlib
import importlib
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
MAX_FILE_BYTES = 256 * 1024 * 1024  # a digit image is kilobytes; anything this big is refused
OUTSIDE_LINK = "symbolic link leads outside the folder; not followed"
WORKERS = os.cpu_count() or 1  # reader processes: one per core
PARALLEL_FROM = 200  # fewer files than this are read in-process: a pool costs ~1 s to start


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
    """list_images in the order the folders are walked, one at a time."""
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder of images")
    root = folder.resolve()
    prefix = os.path.join(folder, "")  # every location os.walk gives starts with it

    def image(location: str, problem: str | None) -> ImageFile:
        return ImageFile(display_name(location[len(prefix):]), location, problem)

    for dirpath, dirnames, filenames in os.walk(folder):
        for name in list(dirnames):
            location = os.path.join(dirpath, name)
            if os.path.islink(location):
                dirnames.remove(name)  # never descended: no loops, no escapes
                if not Path(location).resolve().is_relative_to(root):
                    yield image(location, OUTSIDE_LINK)
        for name in filenames:
            location = os.path.join(dirpath, name)
            if os.path.splitext(name)[1].lower() not in EXTENSIONS:
                continue
            outside = os.path.islink(location) and not Path(location).resolve().is_relative_to(root)
            yield image(location, OUTSIDE_LINK if outside else None)


def read_image(file: ImageFile) -> tuple[str | None, np.ndarray | None, str | None]:
    """(sha256, model input, error) for one file; never raises for a bad file."""
    from tasks.images import ImageError, preprocess  # see the module's docstring

    if file.problem:
        return None, None, file.problem
    try:
        with open(file.location, "rb") as f:
            # Sized by the file, not the limit: a 256 MiB buffer per call cost 0.06 ms per image.
            data = f.read(min(os.fstat(f.fileno()).st_size, MAX_FILE_BYTES) + 1)
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


def _read_batch(rows: list[tuple]) -> list[tuple[str | None, np.ndarray | None, str | None]]:
    # Plain tuples cross to the worker processes: pickling a dataclass costs 7× as much.
    return [read_image(ImageFile(*row)) for row in rows]


def _start_reader() -> None:
    importlib.import_module("tasks.images")  # Pillow and SciPy, before the first batch needs them


_pool: ProcessPoolExecutor | None = None


def worker_pool() -> ProcessPoolExecutor:
    """One pool per process, started on first use and reused by every chunk."""
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(max_workers=WORKERS,
                                    mp_context=multiprocessing.get_context("spawn"))
    return _pool


def start_readers() -> None:
    """Start the reader processes now, so they import while the caller does other work."""
    if not multiprocessing.current_process().daemon:
        pool = worker_pool()
        for _ in range(WORKERS):
            pool.submit(_start_reader)  # each idle worker spawns, imports what reading needs


def read_images(files: list[ImageFile]) -> list[tuple[str | None, np.ndarray | None, str | None]]:
    """read_image for every file, in order; spread over all cores when there are enough."""
    # A Dask worker is a daemonic process, which may not start children: there the cluster's
    # workers are the parallelism.
    if len(files) < PARALLEL_FROM or multiprocessing.current_process().daemon:
        return [read_image(f) for f in files]
    size = -(-len(files) // (4 * WORKERS))  # a few batches per core, for balance
    rows = [(f.path, f.location, f.problem) for f in files]
    batches = [rows[i:i + size] for i in range(0, len(rows), size)]
    return [row for batch in worker_pool().map(_read_batch, batches) for row in batch]
