"""Liveness: the process is alive only while every kopf watch stream it needs runs.

A kind that is not served when the operator starts (its CRD installed later, or discovery
failing for it) gets no watch stream: kopf 1.45 logs nothing and never retries, since resource
scanning is off. A stream can also end without an error that stops the operator (kopf-at-scale
§3.8; an error that outlasts the retries stops the whole operator in 1.45, so the process exits
by itself). Either way only a restart recovers, so ``/healthz`` fails. kopf keeps its watcher
tasks private; they are found by the name kopf gives them (``watcher for <resource>@<namespace>``,
pinned kopf, checked by the operator tests).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

WATCHER_TASK_PREFIX = "watcher for "


class WatchersEnded(Exception):
    """At least one kopf watch stream is gone; /healthz answers 500 while this is raised."""


class WatcherCheck:
    """Tells whether the expected number of kopf watchers runs.

    Args:
        expected: watcher tasks kopf starts (watched kinds × served namespaces, or kinds when cluster-wide).
        grace: seconds after creation during which too few watchers is not yet an error (kopf is starting).
        clock: monotonic clock, for tests.
    """

    def __init__(self, expected: int, grace: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.expected = expected
        self.grace = grace
        self._clock = clock
        self._since = self._clock()
        self._seen: set[str] = set()
        self.running = self.ended = 0

    def problems(self, tasks: Iterable[asyncio.Task[object]] | None = None) -> list[str]:
        """What is wrong now (empty: healthy). ``tasks`` defaults to this loop's running tasks."""
        names = {
            t.get_name()
            for t in (asyncio.all_tasks() if tasks is None else tasks)
            if t.get_name().startswith(WATCHER_TASK_PREFIX) and not t.done()
        }
        ended = sorted(self._seen - names)
        self._seen |= names
        self.running, self.ended = len(names), len(ended)
        found = [f"{name[len(WATCHER_TASK_PREFIX) :]} ended" for name in ended]
        if len(names) < self.expected and (ended or self._clock() - self._since >= self.grace):
            found.append(f"{len(names)} of {self.expected} kopf watch streams running")
        return found

    def check(self) -> int:
        """Raise ``WatchersEnded`` unless healthy; returns the number of running watchers."""
        found = self.problems()
        if found:
            raise WatchersEnded("; ".join(found))
        return self.running
