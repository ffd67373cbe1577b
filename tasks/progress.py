"""Progress of a long step: a bar on the terminal, and a progress artifact in the Prefect UI."""

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def progress(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`. The bar is drawn only when stderr is a terminal."""
    artifact = create_progress_artifact(progress=0.0, description=description)
    done = 0
    with _terminal_bar(total, description) as bar:
        def advance(n: int) -> None:
            nonlocal done
            done += n
            bar(n)
            update_progress_artifact(artifact, progress=100.0 * done / max(total, 1))

        yield advance
    update_progress_artifact(artifact, progress=100.0)


@contextmanager
def _terminal_bar(total: int, description: str) -> Iterator[Callable[[int], None]]:
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    columns = (TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
