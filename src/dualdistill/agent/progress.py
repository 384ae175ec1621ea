"""Progress of many trajectories (``agent.driver.run_many``): problems whose samples are all done, accuracy so
far, generated tokens per second, and how long no record has come (a slow or hung server shows itself).

Display only: nothing here changes what is run or written. Off (no rich display) when not enabled.
"""

from __future__ import annotations

import time

from dualdistill.agent.record import AgentRecord


def waiting_column():
    """A progress column that says how long no record has come (a slow or hung server shows itself)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Waiting(ProgressColumn):
        def render(self, task) -> Text:
            idle = time.monotonic() - task.fields.get("last", time.monotonic())
            return Text(f"waiting {idle:.0f}s for the model" if idle >= 10 else "", style="yellow")

    return Waiting()


class Tracker:
    """Rich progress: problems whose samples are all done, accuracy so far, generated tokens/s."""

    def __init__(self, problems, samples: int, done: set, *, enabled: bool):
        self.samples = samples
        self.remaining = {(p.source, p.id): samples for p in problems}
        for key in done:
            if key[:2] in self.remaining and key[2] < samples:
                self.remaining[key[:2]] -= 1
        self.correct = self.graded = self.tokens = 0
        self.start = time.perf_counter()
        self.enabled = enabled
        self.progress = None
        self.task = None

    def __enter__(self) -> Tracker:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("[bold]problems"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), waiting_column(),
            )  # fmt: skip
            self.progress.start()
            done = sum(1 for v in self.remaining.values() if v <= 0)
            self.task = self.progress.add_task(
                "", total=len(self.remaining), completed=done, stats="", last=time.monotonic()
            )
        return self

    def finished(self, record: AgentRecord) -> None:
        key = (record.source, record.problem_id)
        self.remaining[key] -= 1
        self.graded += 1
        self.correct += bool(record.correct)
        self.tokens += record.n_generated
        if self.progress is not None:
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            stats = f"acc {self.correct / self.graded:.1%} ({self.graded} new)  {self.tokens / elapsed:,.0f} tok/s"
            self.progress.update(
                self.task, advance=int(self.remaining[key] == 0), stats=stats, last=time.monotonic()
            )

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
