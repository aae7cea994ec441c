"""Per-experiment serialisation: one reconcile at a time per key, events coalesced, periodic resync."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class Scheduler(Generic[K]):
    """Runs ``work(key)`` for requested keys: never twice at once for one key, bursts coalesced.

    The first request for an idle key runs at once (leading edge: an applied Experiment gets
    its first trial without waiting); requests that arrive while it runs, or within
    ``debounce`` seconds after it, make one more run ``debounce`` seconds after it ends,
    however many there were. A run that raises is retried
    with exponential backoff: ``retry`` seconds, doubling up to ``max_retry``. ``work``
    returns whether the key stays active (resynced periodically).

    Args:
        work: the reconcile coroutine.
        debounce: seconds to wait before a run that follows another (to coalesce a burst).
        retry: seconds before retrying a failed run, the first time.
        max_retry: the longest wait between retries.
    """

    def __init__(
        self, work: Callable[[K], Awaitable[bool]], debounce: float, retry: float, max_retry: float = 120.0
    ) -> None:
        self._work = work
        self._debounce = debounce
        self._retry = retry
        self._max_retry = max(retry, max_retry)
        self._dirty: set[K] = set()
        self._tasks: dict[K, asyncio.Task[None]] = {}
        self.active: set[K] = set()

    def request(self, key: K) -> None:
        self._dirty.add(key)
        if key not in self._tasks:
            self._tasks[key] = asyncio.get_running_loop().create_task(self._run(key), name=f"reconcile {key}")

    def forget(self, key: K) -> None:
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

    def retry_delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed run in a row."""
        return min(self._max_retry, self._retry * 2 ** min(failures - 1, 16))

    async def _run(self, key: K) -> None:
        failures = 0
        try:
            while True:
                self._dirty.discard(key)
                try:
                    still_active = await self._work(key)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    failures += 1
                    delay = self.retry_delay(failures)
                    log.exception("reconcile of %s failed (%d in a row); retrying in %.3gs", key, failures, delay)
                    self.active.add(key)
                    await asyncio.sleep(delay)
                    continue
                failures = 0
                if still_active:
                    self.active.add(key)
                else:
                    self.active.discard(key)
                # The run's own writes come back as events within milliseconds: they, and whatever
                # else arrives meanwhile, make one more run after the debounce, not one run each.
                await asyncio.sleep(self._debounce)
                if key not in self._dirty:
                    return
        finally:
            self._tasks.pop(key, None)
