"""The watch-stream check behind the liveness probe, on stand-in tasks (no operator)."""

from __future__ import annotations

import asyncio

import pytest
from kubenas.controller.health import WatcherCheck, WatchersEnded


async def test_counts_kopf_watchers_and_reports_ended_ones() -> None:
    now = [0.0]
    check = WatcherCheck(expected=2, grace=10, clock=lambda: now[0])
    forever = asyncio.Event()
    a = asyncio.create_task(forever.wait(), name="watcher for trials.v1alpha1.kubenas.io@None")
    b = asyncio.create_task(forever.wait(), name="watcher for pods.v1@None")
    other = asyncio.create_task(forever.wait(), name="poster of events")
    assert check.problems({other}) == []  # kopf still starting: within the grace period
    assert check.problems({a, b, other}) == [] and check.running == 2
    b.cancel()
    await asyncio.gather(b, return_exceptions=True)
    assert check.problems({a, b}) == ["pods.v1@None ended", "1 of 2 kopf watch streams running"]
    assert check.ended == 1
    forever.set()
    await asyncio.gather(a, other)


async def test_missing_watchers_fail_after_the_grace_period() -> None:
    now = [0.0]
    check = WatcherCheck(expected=4, grace=10, clock=lambda: now[0])
    assert check.problems(set()) == []
    now[0] = 10.0
    with pytest.raises(WatchersEnded, match="0 of 4"):
        check.check()  # this loop runs no kopf watcher
