"""``kubenas operator`` as a process: the real CLI entry point serves the cluster and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
from kmock_cluster import Emulator, Kubelet
from operator_harness import EXP, FAST, TRIALS, by_width, eventually, experiment, finished


@pytest.mark.slow
async def test_kubenas_operator_command(cluster: Emulator) -> None:
    env = {**os.environ, **FAST, "KUBENAS_TEST_API_URL": str(cluster.url)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kubenas.cli",
        "operator",
        "--all-namespaces",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with Kubelet(str(cluster.url), by_width) as k:
            await k.request("POST", EXP, experiment(budget={"maxTrials": 2, "parallelTrials": 2}))
            status = await eventually(lambda: finished(k), timeout=60)
            assert status["phase"] == "Succeeded" and len(await k.items(TRIALS)) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, output.decode()[-3000:]
    assert b"kubenas operator started (namespaces: all)" in output
