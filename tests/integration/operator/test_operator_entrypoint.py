"""``kubenas operator`` as a process: killed with SIGKILL mid-run and restarted, then stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from kmock_cluster import Emulator, Kubelet
from operator_harness import EXP, FAST, TRIALS, eventually, experiment
from test_operator_restart import MAX_TRIALS, assert_exact_outcome, by_width_slowly


@pytest.mark.slow
async def test_kill_9_mid_run_and_restart(cluster: Emulator, tmp_path: Path) -> None:
    env = {**os.environ, **FAST, "KUBENAS_TEST_API_URL": str(cluster.url)}

    log = (tmp_path / "operator.log").open("ab")

    async def start() -> asyncio.subprocess.Process:
        argv = [sys.executable, "-m", "kubenas.cli", "operator", "--all-namespaces"]
        return await asyncio.create_subprocess_exec(*argv, env=env, stdout=log, stderr=log)

    async def succeeded(k: Kubelet) -> int:
        return sum((t.get("status") or {}).get("phase") == "Succeeded" for t in await k.items(TRIALS))

    proc = await start()
    try:
        async with Kubelet(str(cluster.url), by_width_slowly) as k:
            await k.request("POST", EXP, experiment(budget={"maxTrials": MAX_TRIALS, "parallelTrials": 3}))
            for done in (1, 4):
                await eventually(lambda done=done: at_least(succeeded(k), done), timeout=60)
                proc.kill()  # SIGKILL: no cleanup, whatever it was doing
                await proc.wait()
                proc = await start()
            await assert_exact_outcome(k, cluster)
        proc.send_signal(signal.SIGTERM)  # a graceful stop exits 0
        await asyncio.wait_for(proc.wait(), 30)
        output = (tmp_path / "operator.log").read_text()
        assert proc.returncode == 0, output[-3000:]
        assert output.count("kubenas operator started (namespaces: all)") == 3
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()


async def at_least(value: Any, n: int) -> bool:
    return (await value) >= n
