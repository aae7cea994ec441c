"""The operator's per-experiment scheduler: leading edge, coalescing, backoff (no wall-clock timing)."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest
from kubenas.controller.scheduler import Scheduler


async def settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def test_the_first_request_runs_at_once_even_with_a_long_debounce() -> None:
    runs: list[Hashable] = []

    async def work(key: Hashable) -> bool:
        runs.append(key)
        return True

    scheduler = Scheduler(work, debounce=3600, retry=3600)
    scheduler.request("a")
    await settle()
    assert runs == ["a"]
    assert scheduler.active == {"a"}
    await scheduler.close()


async def test_requests_during_a_run_coalesce_into_one_more_run() -> None:
    release = asyncio.Event()
    runs = 0

    async def work(key: Hashable) -> bool:
        nonlocal runs
        runs += 1
        if runs == 1:
            await release.wait()
        return False

    scheduler = Scheduler(work, debounce=0, retry=3600)
    scheduler.request("a")
    await settle()
    for _ in range(10):
        scheduler.request("a")
    release.set()
    await settle(50)
    assert runs == 2
    assert scheduler.active == set()
    await scheduler.close()


async def test_a_failed_run_is_retried_and_the_key_stays_active() -> None:
    attempts = 0

    async def work(key: Hashable) -> bool:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise RuntimeError("API down")
        return False

    scheduler = Scheduler(work, debounce=0, retry=0)
    scheduler.request("a")
    await settle(50)
    assert attempts == 3
    await scheduler.close()


@pytest.mark.parametrize(
    ("failures", "delay"), [(1, 10), (2, 20), (3, 40), (4, 80), (5, 120), (50, 120)], ids=lambda v: str(v)
)
def test_retries_back_off_exponentially_up_to_a_cap(failures: int, delay: float) -> None:
    async def work(key: Hashable) -> bool:
        return False

    assert Scheduler(work, debounce=0.2, retry=10, max_retry=120).retry_delay(failures) == delay
