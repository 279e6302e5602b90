"""Progress display for long commands: a rich bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from alertd.backfill import DayDone, ProgressCallback


def _line(done: DayDone, stored_total: int) -> str:
    rate = stored_total / done.elapsed_s if done.elapsed_s > 0 else 0.0
    # Past the first kind's (answers), how many of each: ", 3 of them statements".
    of_them = "".join(
        f", {count} of them {plural}" for plural, count in done.stored_by_kind[1:] if count
    )
    return (
        f"backfill {done.day}: day {done.days_done}/{done.days_total}, {done.listed} listed, "
        f"{done.stored} new{of_them} ({stored_total} in all, {rate:.1f} items/s)"
    )


@contextmanager
def backfill_progress() -> Iterator[ProgressCallback]:
    """A callback that shows each finished day; a live bar when stderr is a terminal."""
    console = Console(stderr=True)
    stored_total = 0
    if not console.is_terminal:

        def plain(done: DayDone) -> None:
            nonlocal stored_total
            stored_total += done.stored
            print(_line(done, stored_total), file=sys.stderr, flush=True)

        yield plain
        return
    columns = (
        TextColumn("[bold]backfill[/] {task.fields[day]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("days · {task.fields[stored]} stored · {task.fields[rate]:.1f}/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("backfill", total=None, day="", stored=0, rate=0.0)

        def live(done: DayDone) -> None:
            nonlocal stored_total
            stored_total += done.stored
            rate = stored_total / done.elapsed_s if done.elapsed_s > 0 else 0.0
            bar.update(
                task,
                total=done.days_total,
                completed=done.days_done,
                day=str(done.day),
                stored=stored_total,
                rate=rate,
            )

        yield live
