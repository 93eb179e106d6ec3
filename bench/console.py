"""Terminal output: one rich console, progress bars that respect ``--quiet``, tables.

Everything shown to a person goes through here; results are computed elsewhere
(rich renders, never computes).  Tables and summaries go to stdout, progress and
messages to stderr, so ``bench ... --json > out.json`` stays machine-readable.
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table


class Output:
    def __init__(self, quiet: bool = False, as_json: bool = False):
        self.quiet = quiet
        self.as_json = as_json
        # piped output (files, CI logs) gets room for the wide tables instead of rich's 80
        self.out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
        self.err = Console(stderr=True, highlight=False,
                           width=None if sys.stderr.isatty() else 200)

    def info(self, message: str) -> None:
        if not self.quiet and not self.as_json:
            self.err.print(escape(message))

    def error(self, message: str) -> None:
        self.err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)

    def json(self, obj: Any) -> None:
        print(json.dumps(obj, indent=2, default=str))

    def table(self, title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
              caption: str | None = None) -> None:
        t = Table(title=title, caption=caption, title_justify="left")
        for i, c in enumerate(columns):
            t.add_column(c, no_wrap=i == 0)
        for r in rows:
            t.add_row(*("" if v is None else str(v) for v in r))
        self.out.print(t)

    @contextmanager
    def progress(self) -> Iterator[Progress]:
        """A rich Progress; hidden (but still usable) under --quiet or --json."""
        p = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                     MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                     console=self.err, disable=self.quiet or self.as_json, transient=False)
        with p:
            yield p

    def track(self, items: Sequence[Any], description: str) -> Iterator[Any]:
        with self.progress() as p:
            task = p.add_task(description, total=len(items))
            for item in items:
                yield item
                p.advance(task)
