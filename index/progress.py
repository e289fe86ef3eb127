"""The progress bar of an indexing run: files done of the files found, items committed, items per second.

Every executor draws the same bar, advanced by the committer (``omniret.index.commit``) as files are
written, skipped, failed or found unchanged; it goes to stderr so ``--json`` output stays clean.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text


class _Rate(TextColumn):
    """``N items, R items/s`` from the task's ``items`` field."""

    def render(self, task: Task) -> Text:
        el = task.elapsed or 0.0
        items = int(task.fields.get("items", 0))
        return Text(f"{items} items, {items / el:.1f} items/s" if el > 0 else f"{items} items")


class FileProgress:
    """A started bar over ``total`` files; ``advance`` as files are done, ``stop`` at the end."""

    def __init__(self, total: int, *, console: Console | None = None) -> None:
        self._bar = Progress(TextColumn("[bold]indexing[/] files"), BarColumn(), MofNCompleteColumn(), _Rate(""),
                             TimeElapsedColumn(), console=console or Console(stderr=True), transient=False)
        self._bar.start()
        self._task: TaskID = self._bar.add_task("indexing", total=total, items=0)

    def advance(self, files: int, items: int) -> None:
        self._bar.update(self._task, advance=files, items=items)

    def stop(self) -> None:
        self._bar.stop()
