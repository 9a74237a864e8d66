"""Task ownership for long-running services.

``asyncio.TaskGroup`` cancels every sibling when one child fails, which is right for a unit
of work and wrong for a server, where one user's failing connection must not end the others.
:class:`TaskOwner` is the server-side counterpart: it owns every task it spawns, logs (never
re-raises) a child's unexpected exception, and cancels and awaits all of them in
:meth:`TaskOwner.close`. No ferry task exists without an owner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TypeVar

from ferry.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")


class TaskOwner:
    """Owns a set of tasks; closing it cancels them and waits for them to finish."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[object]] = set()
        self._closed = False

    def spawn(self, coroutine: Coroutine[object, object, T], *, name: str) -> asyncio.Task[T]:
        """Start ``coroutine`` as a task owned by this owner."""
        if self._closed:
            coroutine.close()
            raise RuntimeError(f"{self._name} is closed and cannot start {name}")
        task = asyncio.get_running_loop().create_task(coroutine, name=f"{self._name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error(
                "task %s failed: %s", task.get_name(), error, exc_info=(type(error), error, None)
            )

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel every owned task and wait until all have finished."""
        self._closed = True
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
