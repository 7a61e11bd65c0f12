"""A rich progress bar behind the ``Progress`` interface that loops report to."""
from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .common import make_console


class RichProgress:
    """One bar per phase (``start``), advanced per step; disappears when the run ends.

    Where the console is no terminal (a log file, nohup, a batch job) a bar would print nothing until the
    end, so each phase is a plain line instead, at most one every ``plain_every`` seconds.
    """

    def __init__(self, console: Console | None = None, enabled: bool = True, plain_every: float = 10.0):
        console = console or make_console(stderr=True)
        self._console = console
        self._plain = enabled and not console.is_terminal
        self._plain_every = plain_every
        self._started = self._last_line = None
        self._bar = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                             transient=True, disable=not enabled or self._plain)
        self._task = None

    def __enter__(self):
        self._started = time.monotonic()
        self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self._bar.__exit__(*exc)

    def start(self, description: str, total: int | None) -> None:
        if self._plain:
            now = time.monotonic()
            if self._last_line is None or now - self._last_line >= self._plain_every:
                self._last_line = now
                elapsed = now - (self._started or now)
                self._console.print(f"[{elapsed:6.0f}s] {description}" + (f" ({total} steps)" if total else ""),
                                    highlight=False)
            return
        if self._task is not None:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        if self._task is not None:
            self._bar.advance(self._task, n)
