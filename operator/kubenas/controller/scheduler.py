"""Per-experiment serialisation: one reconcile at a time per key, events coalesced, periodic resync."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)


class Scheduler:
    """Runs ``work(key)`` for requested keys: never twice at once for one key, bursts coalesced.

    A request during a run makes one more run after it. A run that raises is retried after
    ``retry`` seconds. ``work`` returns whether the key stays active (resynced periodically).

    Args:
        work: the reconcile coroutine.
        debounce: seconds to wait after the first request before running (to coalesce a burst).
        retry: seconds before retrying a failed run.
    """

    def __init__(self, work: Callable[[Hashable], Awaitable[bool]], debounce: float, retry: float) -> None:
        self._work = work
        self._debounce = debounce
        self._retry = retry
        self._dirty: set[Hashable] = set()
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}
        self.active: set[Hashable] = set()

    def request(self, key: Hashable) -> None:
        self._dirty.add(key)
        if key not in self._tasks:
            self._tasks[key] = asyncio.get_running_loop().create_task(self._run(key), name=f"reconcile {key}")

    def forget(self, key: Hashable) -> None:
        self.active.discard(key)

    async def resync_forever(self, interval: float) -> None:
        """Request every active key each ``interval`` seconds (deadlines, stuck pods, metrics)."""
        while True:
            await asyncio.sleep(interval)
            for key in list(self.active):
                self.request(key)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, key: Hashable) -> None:
        try:
            while key in self._dirty:
                await asyncio.sleep(self._debounce)
                self._dirty.discard(key)
                try:
                    still_active = await self._work(key)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("reconcile of %s failed; retrying in %ss", key, self._retry)
                    self.active.add(key)
                    await asyncio.sleep(self._retry)
                    self._dirty.add(key)
                    continue
                if still_active:
                    self.active.add(key)
                else:
                    self.active.discard(key)
        finally:
            self._tasks.pop(key, None)
