"""Rich progress for training loops: step bar with loss and throughput (examples/s)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainProgress:
    """``with TrainProgress(total, desc) as p: p.update(step, loss=..., examples=n)``."""

    def __init__(self, total: int, description: str = "training", *, console: Console | None = None,
                 start: int = 0, enabled: bool = True) -> None:
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]} ex/s"),
                                  TimeElapsedColumn(), TimeRemainingColumn(),
                                  console=console or Console(stderr=True), disable=not enabled)
        self._task = self._progress.add_task(description, total=total, completed=start, loss="-", rate="-")
        self._t0 = time.perf_counter()
        self._examples = 0
        self.history: list[dict[str, Any]] = []

    def __enter__(self) -> TrainProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)

    def update(self, step: int, *, loss: float | None = None, examples: int = 0) -> None:
        self._examples += examples
        rate = self._examples / max(time.perf_counter() - self._t0, 1e-9)
        fields: dict[str, Any] = {"rate": f"{rate:.1f}"}
        if loss is not None:
            fields["loss"] = f"{loss:.4f}"
            self.history.append({"step": step, "loss": loss, "examples_per_s": rate})
        self._progress.update(self._task, completed=step, **fields)
