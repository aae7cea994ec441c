"""The multi-process side of the trainer without starting processes: topology from the environment, data shards."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from kubenas_trial import distributed
from kubenas_trial.distributed import Topology, TopologyError
from kubenas_trial.train import ShardedBatches

_VARIABLES = ("WORLD_SIZE", "RANK", "NODE_RANK", "LOCAL_RANK", "NPROC_PER_NODE", "NNODES", "MASTER_ADDR",
              "MASTER_PORT")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _set(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_no_environment_is_one_process(env: pytest.MonkeyPatch) -> None:
    assert distributed.topology() == distributed.SINGLE and not distributed.topology().distributed
    _set(env, WORLD_SIZE="1", NODE_RANK="0")
    assert not distributed.topology().distributed


def test_pod_of_a_two_pod_trial(env: pytest.MonkeyPatch) -> None:
    _set(env, MASTER_ADDR="trial-0.svc", MASTER_PORT="29500", WORLD_SIZE="2", NNODES="2", NODE_RANK="1",
         RANK="1", NPROC_PER_NODE="1")
    topo = distributed.topology()
    assert (topo.world_size, topo.rank, topo.local_rank, topo.master_addr, topo.master_port) == (
        2, 1, 0, "trial-0.svc", 29500)
    assert topo.distributed and not topo.is_main and not distributed.needs_local_workers()


def test_multi_gpu_pod_launches_local_workers(env: pytest.MonkeyPatch) -> None:
    _set(env, MASTER_ADDR="a", MASTER_PORT="29500", WORLD_SIZE="8", NNODES="2", NODE_RANK="1", NPROC_PER_NODE="4")
    assert distributed.needs_local_workers()  # the pod's process spawns its 4 workers
    env.setenv("LOCAL_RANK", "3")
    assert not distributed.needs_local_workers()
    assert distributed.topology().rank == 7 and distributed.topology().local_rank == 3


@pytest.mark.parametrize(("values", "message"), [
    ({"WORLD_SIZE": "2", "MASTER_PORT": "29500"}, "MASTER_ADDR must be set"),
    ({"WORLD_SIZE": "2", "MASTER_ADDR": "a"}, "MASTER_PORT must be set"),
    ({"WORLD_SIZE": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1", "RANK": "2"}, r"rank 2 .* must be < WORLD_SIZE \(2\)"),
    ({"WORLD_SIZE": "3", "NPROC_PER_NODE": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"}, "multiple of NPROC_PER_NODE"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE must be an integer"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE must be ≥ 1"),
])
def test_bad_environment_names_the_variable(env: pytest.MonkeyPatch, values: dict[str, str], message: str) -> None:
    _set(env, **values)
    with pytest.raises(TopologyError, match=message):
        distributed.topology()


def _shards(epoch: int, n: int = 23, world: int = 2, batch: int = 4) -> list[list[list[int]]]:
    x = torch.arange(float(n)).view(n, 1)
    shards = []
    for rank in range(world):
        batches = ShardedBatches(x, torch.arange(n), batch, torch.device("cpu"), Topology(world, rank), seed=0)
        batches.set_epoch(epoch)
        shards.append([xb.flatten().long().tolist() for xb, _ in batches])
    return shards


def test_shards_cover_the_epoch_with_the_same_number_of_batches() -> None:
    shards = _shards(epoch=0)
    assert len(shards[0]) == len(shards[1]) == 3  # 12 samples each (one repeated to even out), batches of 4
    seen = [i for shard in shards for batch in shard for i in batch]
    assert set(seen) == set(range(23)) and len(seen) == 24


def test_shard_order_depends_on_the_epoch_only() -> None:
    assert _shards(epoch=3) == _shards(epoch=3)  # a resumed run draws the same batches
    assert _shards(epoch=3) != _shards(epoch=4)


def test_a_failed_local_worker_stops_the_others(env: pytest.MonkeyPatch, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Worker 1 fails at once; worker 0 would run for a minute (a rank waiting for its peer): it is stopped."""
    fake_python = tmp_path / "python"
    fake_python.write_text('#!/bin/sh\necho "$LOCAL_RANK $RANK $*" >> "$(dirname "$0")/started"\n'
                           '[ "$LOCAL_RANK" = 1 ] && exit 3\necho $$ > "$(dirname "$0")/sleeper"\nexec sleep 60\n')
    fake_python.chmod(0o755)
    env.setattr(sys, "executable", str(fake_python))
    _set(env, NPROC_PER_NODE="2", NODE_RANK="1", NNODES="2", WORLD_SIZE="4")
    assert distributed.needs_local_workers()
    assert distributed.run_local_workers(["-p", "epochs=1"]) == 3
    started = sorted((tmp_path / "started").read_text().splitlines())
    assert started == ["0 2 -m kubenas_trial -p epochs=1", "1 3 -m kubenas_trial -p epochs=1"]
    assert "local worker 1 (rank 3) exited with code 3; stopping the others" in capsys.readouterr().err
    sleeper = tmp_path / "sleeper"  # absent only if worker 0 was stopped before it got there
    if sleeper.exists():
        with pytest.raises(ProcessLookupError):  # worker 0 was stopped and reaped, not left running
            os.kill(int(sleeper.read_text()), 0)
