"""Trial processes on the local machine: start, watch, end, and find orphans of a killed run.

Each trial runs as the trial template's container command + args, directly (never through a
shell), in its own session so that ending it ends every process it started. Every start is
recorded (pid, process group, start time) in the run directory before the runner does
anything else, so that ``kubenas run --resume`` after ``kill -9`` of the runner can find
the trial processes it left behind and end them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

# Interpreter names in a trial image that mean "the Python that runs kubenas" locally.
PYTHON_NAMES = frozenset({"python", "python3"})
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "KUBENAS_NUM_THREADS")
# Two start times closer than this belong to the same process (psutil rounds to clock ticks).
_START_TIME_TOLERANCE = 0.05


@dataclass(frozen=True)
class ProcessRecord:
    """What identifies a trial process across a runner restart (pid alone can be reused)."""

    trial: str
    pid: int
    pgid: int
    create_time: float


def local_argv(command: Sequence[str], args: Sequence[str]) -> list[str]:
    """The argv that runs a container's ``command`` + ``args`` on this machine.

    ``python``/``python3`` as the executable becomes the interpreter running kubenas
    (``sys.executable``), so a trial uses the same virtual environment, and therefore the
    same installed ``kubenas_trial``, as the runner. Anything else is looked up on PATH.
    """
    argv = [*command, *args]
    if not argv:
        raise ValueError("the trial container has neither command nor args: nothing to run locally")
    if Path(argv[0]).name in PYTHON_NAMES or Path(argv[0]).name.startswith("python3."):
        argv[0] = sys.executable
    return argv


def threads_per_trial(parallel: int, cpus: int | None = None) -> int:
    """CPU threads each of ``parallel`` concurrent trials may use, so that together they fill the machine once."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, parallel))


def thread_environment(threads: int) -> dict[str, str]:
    """Variables that cap the math libraries' thread pools (torch reads OMP_NUM_THREADS at start)."""
    return {name: str(threads) for name in THREAD_VARIABLES}


class PortAllocator:
    """Hands out free loopback ports, never the same one to two live trials."""

    def __init__(self) -> None:
        self._held: set[int] = set()

    def acquire(self) -> int:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in self._held:
                self._held.add(port)
                return port
        raise RuntimeError("no free local port for a trial's metrics endpoint")

    def release(self, port: int) -> None:
        self._held.discard(port)


class TrialProcess:
    """One running trial process (the leader of its own process group).

    Args:
        trial: the Trial's name.
        popen: the started process.
        record: its identity, as written to the process registry.
        port: the metrics port it was given.
    """

    def __init__(self, trial: str, popen: subprocess.Popen[bytes], record: ProcessRecord, port: int) -> None:
        self.trial = trial
        self.popen = popen
        self.record = record
        self.port = port
        self.started = time.monotonic()

    @classmethod
    def start(
        cls,
        trial: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        port: int,
    ) -> TrialProcess:
        """Start ``argv`` (no shell) in a new session, stdout and stderr to ``log_path``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        try:
            create_time = psutil.Process(popen.pid).create_time()
        except psutil.Error:  # already gone: nothing can be orphaned
            create_time = 0.0
        return cls(trial, popen, ProcessRecord(trial, popen.pid, popen.pid, create_time), port)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def poll(self) -> int | None:
        """The exit code once the process has ended (negative: killed by that signal), else None."""
        return self.popen.poll()

    def end(self, grace: float = 5.0) -> int:
        """End the whole process group: SIGTERM, then SIGKILL after ``grace`` seconds. Returns the exit code."""
        _signal_group(self.record.pgid, signal.SIGTERM)
        try:
            code = self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(self.record.pgid, signal.SIGKILL)
            code = self.popen.wait()
        self.reap_group()
        return code

    def reap_group(self) -> None:
        """Kill what the trial left running in its group after it exited (e.g. data-loader workers)."""
        _signal_group(self.record.pgid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class ProcessRegistry:
    """The run directory's record of started trial processes (``processes.json``).

    Written atomically on every change, so that after ``kill -9`` of the runner it names
    exactly the processes that may still be running.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, ProcessRecord]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        records = {}
        for item in raw if isinstance(raw, list) else []:
            with contextlib.suppress(TypeError, KeyError, ValueError):
                record = ProcessRecord(
                    trial=str(item["trial"]),
                    pid=int(item["pid"]),
                    pgid=int(item["pgid"]),
                    create_time=float(item["create_time"]),
                )
                records[record.trial] = record
        return records

    def save(self, records: Iterable[ProcessRecord]) -> None:
        data = json.dumps([asdict(r) for r in records], indent=1).encode()
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def add(self, record: ProcessRecord) -> None:
        records = self.load()
        records[record.trial] = record
        self.save(records.values())

    def remove(self, trial: str) -> None:
        records = self.load()
        if records.pop(trial, None) is not None:
            self.save(records.values())


def end_orphans(records: Iterable[ProcessRecord], grace: float = 3.0) -> list[ProcessRecord]:
    """End the process groups of a previous run that are still alive; returns the records that were.

    A pid is only trusted if the process still has the recorded start time (pids are
    reused); the group's other members are recognised by their process group and by having
    started no earlier than its leader.
    """
    found: list[ProcessRecord] = []
    for record in records:
        members = _group_members(record)
        if not members:
            continue
        found.append(record)
        for proc in members:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(members, timeout=grace)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=grace)
    return found


def _group_members(record: ProcessRecord) -> list[psutil.Process]:
    # The kernel never hands out a pid still in use as a process group id: if the leader's pid
    # now belongs to a younger process, the recorded group is long gone and nothing is ours.
    with contextlib.suppress(psutil.NoSuchProcess):
        leader = psutil.Process(record.pid)
        if abs(leader.create_time() - record.create_time) > _START_TIME_TOLERANCE:
            return []
    members = []
    for proc in psutil.process_iter(["pid", "create_time"]):
        try:
            if os.getpgid(proc.pid) != record.pgid:
                continue
            started = proc.info["create_time"]
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
        if started + _START_TIME_TOLERANCE < record.create_time:
            continue  # older than the trial: not something it started
        members.append(proc)
    return members


def find_run_processes(variable: str, value: str) -> list[ProcessRecord]:
    """Live processes whose environment has ``variable=value``: trials of a run, even ones never registered.

    A runner killed between starting a trial and recording it leaves a process only this finds.
    """
    found = []
    for proc in psutil.process_iter(["pid", "create_time"]):
        if proc.pid == os.getpid():
            continue
        try:
            environ = proc.environ()
            if environ.get(variable) != value:
                continue
            found.append(
                ProcessRecord(
                    trial=environ.get("KUBENAS_TRIAL", "?"),
                    pid=proc.pid,
                    pgid=os.getpgid(proc.pid),
                    create_time=proc.info["create_time"],
                )
            )
        except (psutil.Error, ProcessLookupError, PermissionError, OSError):
            continue
    return found
