"""Fixtures: the API emulator, the real kopf operator (KopfRunner) and the fake kubelet."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import kmock
import pytest
from kmock_cluster import Emulator
from operator_harness import FAST, Operator


@pytest.fixture
async def cluster() -> AsyncIterator[Emulator]:
    async with Emulator() as emulator, kmock.Server(emulator):
        yield emulator


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


logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
