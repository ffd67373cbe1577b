"""Progress of a long step: a bar on the terminal, and a progress artifact in the Prefect UI."""

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


UI_EVERY = 1.0  # seconds at least between two updates of the progress artifact
_open: list[Callable[[int], None]] = []  # the advance() of each progress open in this process


@contextmanager
def progress(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`, which tasks in this process may also reach (advanced()). The bar is
    drawn only when stderr is a terminal."""
    artifact = create_progress_artifact(progress=0.0, description=description)
    done, counting, sent = 0, threading.Lock(), time.monotonic()  # tasks' threads advance it too
    with _terminal_bar(total, description) as bar:
        def advance(n: int) -> None:
            nonlocal done, sent
            with counting:
                done += n
                bar(n)
                if time.monotonic() - sent >= UI_EVERY:  # each update is a call to the API
                    update_progress_artifact(artifact, progress=100.0 * done / max(total, 1))
                    sent = time.monotonic()

        _open.append(advance)
        try:
            yield advance
        finally:
            _open.remove(advance)
    update_progress_artifact(artifact, progress=100.0)


def advanced(n: int) -> bool:
    """Advance the progress open in this process by a task's part of the work, done; whether one
    was open. On a Dask worker none is: the flow advances when the task ends."""
    for advance in list(_open):
        advance(n)
    return bool(_open)


@contextmanager
def _terminal_bar(total: int, description: str) -> Iterator[Callable[[int], None]]:
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    columns = (TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
