"""Rich progress for long plans on a terminal; silent with --json or no tty."""
from __future__ import annotations

from contextlib import contextmanager

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


@contextmanager
def plan_progress(app, total: int, title: str):
    """Yields an on_step(action) callback for execute(), or None when quiet."""
    if not app.interactive or total == 0:
        yield None
        return
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  TextColumn("[dim]{task.fields[step]}"), console=app.err, transient=True) as prog:
        task = prog.add_task(title, total=total, step="")
        done = [0]

        def on_step(action):
            prog.update(task, completed=done[0], step=action.describe()[:70])
            done[0] += 1

        yield on_step
        prog.update(task, completed=total)
