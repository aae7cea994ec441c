"""Fixtures: the API emulator, the real kopf operator (KopfRunner) and the fake kubelet."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock
import pytest
from kmock_cluster import Emulator
from kopf.testing import KopfRunner

FAST = {
    "KUBENAS_DEBOUNCE_SECONDS": "0.05",
    "KUBENAS_RESYNC_SECONDS": "0.5",
    "KUBENAS_METRICS_POLL_SECONDS": "0.2",
    "KUBENAS_RETRY_SECONDS": "0.3",
    "KUBENAS_UNSCHEDULABLE_SECONDS": "0.5",
    "KUBENAS_REQUEST_TIMEOUT": "10",
}


@pytest.fixture
async def cluster() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator, kmock.Server(emulator):
        yield emulator


class Operator:
    """The real operator (``kopf run -m kubenas.controller.handlers``) in a thread, restartable."""

    def __init__(self) -> None:
        self.runner: KopfRunner | None = None
        self.outputs: list[str] = []

    async def start(self) -> None:
        assert self.runner is None
        args = ["run", "--standalone", "-A", "--verbose", "-m", "kubenas.controller.handlers"]
        self.runner = KopfRunner(args, timeout=30, reraise=False)
        await asyncio.get_running_loop().run_in_executor(None, self.runner.__enter__)

    async def stop(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            await asyncio.get_running_loop().run_in_executor(None, runner.__exit__, None, None, None)
            self.outputs.append(runner.output)

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@pytest.fixture
async def operator(cluster: Emulator, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Operator]:
    monkeypatch.setenv("KUBENAS_TEST_API_URL", str(cluster.url))
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)
    op = Operator()
    try:
        yield op
    finally:
        await op.stop()


async def eventually(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns a truthy value (or raises nothing falsy) within ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Exception | None = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
        except AssertionError as err:
            last = err
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {last}")


logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
