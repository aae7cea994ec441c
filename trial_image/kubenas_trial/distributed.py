"""Several processes training one trial: the topology from the environment, the process group, local workers.

The environment is torchrun's (docs/trial.md, "Multi-pod trials"); without ``WORLD_SIZE`` > 1 the
trainer runs as one process and nothing here touches torch.distributed.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from kubenas_trial import sdk
from kubenas_trial.config import ConfigError

# Seconds a stopping local worker gets between SIGTERM and SIGKILL.
WORKER_GRACE_SECONDS = 10.0


class TopologyError(ConfigError):
    """The multi-process environment is incomplete or inconsistent; the message names the variable."""


@dataclass(frozen=True)
class Topology:
    """Where this process sits in a trial: ``world_size`` processes, ``nproc_per_node`` in each pod."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    node_rank: int = 0
    nproc_per_node: int = 1
    master_addr: str = ""
    master_port: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Topology()


def _env(name: str, default: int, minimum: int = 0) -> int:
    try:
        return sdk.env_int(name, default, minimum)
    except ValueError as exc:
        raise TopologyError(str(exc)) from None


def topology() -> Topology:
    """The topology the environment describes (single-process when ``WORLD_SIZE`` is unset or 1).

    Raises:
        TopologyError: ``MASTER_ADDR``/``MASTER_PORT`` missing, or ranks outside the world.
    """
    world = _env(sdk.WORLD_SIZE_ENV, 1, minimum=1)
    nproc = _env(sdk.NPROC_PER_NODE_ENV, 1, minimum=1)
    if world == 1:
        return SINGLE
    node_rank = _env(sdk.NODE_RANK_ENV, 0)
    local_rank = _env(sdk.LOCAL_RANK_ENV, 0)
    try:
        rank = sdk.rank()
    except ValueError as exc:
        raise TopologyError(str(exc)) from None
    if world % nproc:
        raise TopologyError(f"environment variable {sdk.WORLD_SIZE_ENV} ({world}) must be a multiple of "
                            f"{sdk.NPROC_PER_NODE_ENV} ({nproc})")
    if not rank < world:
        raise TopologyError(f"rank {rank} (from {sdk.RANK_ENV}, or {sdk.NODE_RANK_ENV} and {sdk.LOCAL_RANK_ENV}) "
                            f"must be < {sdk.WORLD_SIZE_ENV} ({world})")
    address = os.environ.get(sdk.MASTER_ADDR_ENV, "").strip()
    if not address:
        raise TopologyError(f"environment variable {sdk.MASTER_ADDR_ENV} must be set when {sdk.WORLD_SIZE_ENV} > 1")
    port = _env(sdk.MASTER_PORT_ENV, 0, minimum=1)
    if not port:
        raise TopologyError(f"environment variable {sdk.MASTER_PORT_ENV} must be set when {sdk.WORLD_SIZE_ENV} > 1")
    return Topology(world, rank, local_rank, node_rank, nproc, address, port)


def needs_local_workers() -> bool:
    """Whether this process is a pod's launcher: several processes per node are wanted and none is this one."""
    return _env(sdk.NPROC_PER_NODE_ENV, 1, minimum=1) > 1 and not os.environ.get(sdk.LOCAL_RANK_ENV, "").strip()


def run_local_workers(argv: Sequence[str]) -> int:
    """Run ``NPROC_PER_NODE`` copies of ``python -m kubenas_trial argv`` with ``LOCAL_RANK`` and ``RANK`` set.

    Returns 0 when all succeed, else the exit code of the first worker that failed; the others
    are then stopped (SIGTERM, then SIGKILL), so a failed worker never leaves its peers waiting.
    SIGTERM and SIGINT given to this launcher are passed on to the workers.
    """
    nproc = _env(sdk.NPROC_PER_NODE_ENV, 1, minimum=1)
    node_rank = _env(sdk.NODE_RANK_ENV, 0)
    workers: list[subprocess.Popen[bytes]] = []
    for local in range(nproc):
        env = {**os.environ, sdk.LOCAL_RANK_ENV: str(local), sdk.RANK_ENV: str(node_rank * nproc + local)}
        workers.append(subprocess.Popen([sys.executable, "-m", "kubenas_trial", *argv], env=env))

    def forward(signum: int, _frame: Any) -> None:
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                worker.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        failed = 0
        running = list(enumerate(workers))
        while running and not failed:
            time.sleep(0.2)
            for local, worker in list(running):
                code = worker.poll()
                if code is None:
                    continue
                running.remove((local, worker))
                if code != 0:
                    print(f"kubenas-trial: error: local worker {local} (rank {node_rank * nproc + local}) exited "
                          f"with code {code}; stopping the others", file=sys.stderr, flush=True)
                    failed = code if code > 0 else 1
        for _local, worker in running:
            with contextlib.suppress(ProcessLookupError):
                worker.terminate()
        deadline = time.monotonic() + WORKER_GRACE_SECONDS
        for _local, worker in running:
            try:
                worker.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        return failed
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def local_device(requested: torch.device, topo: Topology) -> torch.device:
    """A worker's device: its own GPU (``cuda:LOCAL_RANK``) when training on CUDA, else the requested one."""
    if topo.distributed and requested.type == "cuda":
        return torch.device("cuda", topo.local_rank)
    return requested


@contextlib.contextmanager
def process_group(topo: Topology, device: torch.device, timeout_seconds: float) -> Iterator[None]:
    """Join the trial's process group (NCCL on CUDA, gloo otherwise) for the block; leave it afterwards.

    ``timeout_seconds`` bounds the rendezvous and every collective: a rank that stops answering
    makes the others fail instead of waiting forever (a rank that exits makes them fail at once).
    """
    if not topo.distributed:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        init_method=f"tcp://{topo.master_addr}:{topo.master_port}",
        rank=topo.rank, world_size=topo.world_size, timeout=datetime.timedelta(seconds=timeout_seconds),
    )
    try:
        yield
        # Every rank reaches the end before any leaves: a rank whose gloo threads still wait on a peer
        # that already tore down and exited is aborted at interpreter exit (SIGABRT, "terminate called
        # without an active exception"), failing a trial that trained to the end.
        dist.barrier()
    finally:
        with contextlib.suppress(Exception):  # tearing down after a peer failed may itself fail
            dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (unchanged when single-process)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` when single-process)."""
    if not active():
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def sum_across(values: Sequence[float], device: torch.device) -> list[float]:
    """Element-wise sums of ``values`` over all ranks (``values`` when single-process)."""
    if not active():
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


@torch.no_grad()
def broadcast_state(module: nn.Module, buffers_only: bool = False) -> None:
    """Make every rank's parameters (and buffers) rank 0's, e.g. batch-norm statistics before evaluating."""
    if not active():
        return
    tensors = list(module.buffers()) if buffers_only else [*module.parameters(), *module.buffers()]
    for tensor in tensors:
        dist.broadcast(tensor.data, src=0)


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing: a peer exited, stopped answering, or the rendezvous timed out."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        marker in text for marker in ("gloo", "Gloo", "NCCL", "Connection closed", "Connection reset", "Timed out")
    )
