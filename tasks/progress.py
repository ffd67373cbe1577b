"""A progress bar on the terminal (stderr), and nothing at all when output is not a terminal."""

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def terminal_progress(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; draws a bar only when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    columns = (TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        bar = progress.add_task(description, total=total)
        yield lambda n: progress.advance(bar, n)
