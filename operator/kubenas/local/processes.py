"""Trial processes on the local machine: start, watch, end, and find orphans of a killed run.

Each trial runs as the trial template's container command + args, directly (never through a
shell), in its own session so that ending it ends every process it started. On Linux it is
also sent SIGTERM when the runner dies (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the runner
does not leave trials training for nobody. Every start is recorded (pid, process group, start
time) in the run directory before the runner does anything else, so that ``kubenas run
--resume`` can find whatever the runner left behind (a trial that ignored SIGTERM, the
processes a trial started) and end it.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from kubenas.local.files import write_atomically

# Interpreter names in a trial image that mean "the Python that runs kubenas" locally.
PYTHON_NAMES = frozenset({"python", "python3"})
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "KUBENAS_NUM_THREADS")
# Two start times closer than this belong to the same process (psutil rounds to clock ticks).
_START_TIME_TOLERANCE = 0.05
DEATH_SIGNAL = signal.SIGTERM
# Runs in the trial's process before the trial's own program: asks the kernel for DEATH_SIGNAL when
# the runner dies (the request survives exec), ends at once if the runner died before it asked,
# then becomes the trial (same pid, same session). A few ms of Python instead of a preexec_fn,
# which is unsafe in the runner (it has scraper threads).
_DEATH_SIGNAL_EXEC = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None).prctl(1, int(sys.argv[1]), 0, 0, 0)\n"  # 1: PR_SET_PDEATHSIG
    "if os.getppid() != int(sys.argv[2]): os.kill(os.getpid(), int(sys.argv[1]))\n"
    "os.execv(sys.argv[3], sys.argv[4:])\n"
)
GPU_VARIABLE = "CUDA_VISIBLE_DEVICES"


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


def startable_problem(argv: Sequence[str], env: Mapping[str, str]) -> str | None:
    """Why the OS cannot start ``argv`` with ``env``, naming the argument or variable; None when it can.

    A NUL byte (e.g. from a categorical value) or text the file system encoding cannot hold
    would make ``Popen`` raise; this says which item it is.
    """
    for index, arg in enumerate(argv):
        problem = _os_text_problem(arg)
        if problem:
            return f"argument {index} ({_shorten(arg)!r}) {problem}"
    for name, value in env.items():
        if not name or "=" in name:
            return f"environment variable name {_shorten(name)!r} is empty or holds '='"
        problem = _os_text_problem(name) or _os_text_problem(value)
        if problem:
            return f"environment variable {_shorten(name)!r} {problem}"
    return None


def _os_text_problem(text: str) -> str | None:
    if "\0" in text:
        return "holds a NUL byte, which no program argument or variable can"
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        return "holds characters the file system encoding cannot hold"
    return None


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def resolve_executable(program: str, env: Mapping[str, str], cwd: Path) -> str:
    """The path ``program`` runs from, looked up on the trial's ``PATH`` as ``Popen`` would.

    Raises:
        FileNotFoundError: no such program.
        PermissionError: it exists but cannot be executed.
    """
    if os.sep in program:
        path = cwd / program
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if path.is_dir() or not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
        return str(path)
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    return os.path.join(cwd, found)


def with_death_signal(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> list[str]:
    """``argv``, run so that the trial gets ``DEATH_SIGNAL`` when the runner dies (Linux; elsewhere as is).

    The signal follows the thread that starts the trial: the runner starts trials from its main thread.
    """
    if not sys.platform.startswith("linux"):
        return list(argv)
    program = resolve_executable(argv[0], env, cwd)
    death = [sys.executable, "-I", "-S", "-c", _DEATH_SIGNAL_EXEC, str(int(DEATH_SIGNAL)), str(os.getpid())]
    return [*death, program, *argv]


def visible_gpus(env: Mapping[str, str], nvidia_smi: str | None = None) -> list[str]:
    """The GPUs trials may use, without importing a GPU library.

    ``CUDA_VISIBLE_DEVICES``'s entries when it is set (up to the first empty or negative one, where
    CUDA stops too); else the GPUs ``nvidia-smi -L`` lists, when it is installed; else none.
    """
    if GPU_VARIABLE in env:
        return visible_devices_entries(env[GPU_VARIABLE])
    program = nvidia_smi or shutil.which("nvidia-smi")
    if program is None:
        return []
    try:
        listing = subprocess.run([program, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return nvidia_smi_gpus(listing.stdout) if listing.returncode == 0 else []


def visible_devices_entries(value: str) -> list[str]:
    entries = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break
        entries.append(entry)
    return entries


def nvidia_smi_gpus(listing: str) -> list[str]:
    """The GPU indices in ``nvidia-smi -L`` output (``GPU 0: NVIDIA A100 (UUID: ...)``)."""
    return re.findall(r"^GPU (\d+):", listing, flags=re.MULTILINE)


def least_busy(gpus: Sequence[str], load: Mapping[str, int], start: int) -> str:
    """The GPU running the fewest trials; among equals, the first from ``start`` on (round-robin)."""
    order = [gpus[(start + i) % len(gpus)] for i in range(len(gpus))]
    return min(order, key=lambda gpu: load.get(gpu, 0))


class GpuAllocator:
    """Spreads parallel trials over the visible GPUs, one each, round-robin and least busy first.

    With fewer than two GPUs there is nothing to spread: :meth:`acquire` returns None and the
    trials see what the runner sees.
    """

    def __init__(self, gpus: Sequence[str]) -> None:
        self.gpus = list(gpus)
        self._load: collections.Counter[str] = collections.Counter()
        self._next = 0

    def acquire(self) -> str | None:
        if len(self.gpus) < 2:
            return None
        gpu = least_busy(self.gpus, self._load, self._next)
        self._load[gpu] += 1
        self._next = (self.gpus.index(gpu) + 1) % len(self.gpus)
        return gpu

    def release(self, gpu: str | None) -> None:
        if gpu is not None and self._load[gpu] > 0:
            self._load[gpu] -= 1


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
        """Start ``argv`` (no shell) in a new session, stdout and stderr to ``log_path``.

        Raises:
            OSError: the program cannot be found or run.
            ValueError: an argument or variable no process can hold (:func:`startable_problem`).
        """
        problem = startable_problem(argv, env)
        if problem:
            raise ValueError(f"cannot start the trial: {problem}")
        command = with_death_signal(argv, env, cwd)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                command,
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


class RankedTrial:
    """The processes of a multi-process trial (``trialTemplate.replicas``), one per rank, rank 0 first.

    It ends as an Indexed Job with ``maxFailedIndexes: 0`` does: when every rank exited 0, or as
    soon as one failed (the others are then killed). The failing rank is the first to exit
    non-zero: each rank's exit time is taken by a thread waiting for it, since its peers usually
    fail a few milliseconds later (their collective calls lose it).

    Args:
        ranks: the started processes; rank 0's port and record stand for the trial.
    """

    def __init__(self, ranks: Sequence[TrialProcess]) -> None:
        self.ranks = list(ranks)
        self.trial = self.ranks[0].trial
        self.port = self.ranks[0].port
        self.record = self.ranks[0].record
        self.started = self.ranks[0].started
        self.failed_rank: int | None = None
        self._exited: dict[int, float] = {}
        for rank, proc in enumerate(self.ranks):
            threading.Thread(target=self._wait, args=(rank, proc), name=f"wait-{proc.trial}", daemon=True).start()

    def _wait(self, rank: int, proc: TrialProcess) -> None:
        proc.popen.wait()
        self._exited.setdefault(rank, time.monotonic())

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def poll(self) -> int | None:
        """0 once every rank exited 0; the failing rank's exit code once one failed (``failed_rank``); else None."""
        codes = [proc.poll() for proc in self.ranks]
        failed = [rank for rank, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            self.failed_rank = min(failed, key=lambda rank: (self._exited.get(rank, float("inf")), rank))
            return codes[self.failed_rank]
        return 0 if all(code == 0 for code in codes) else None

    def end(self, grace: float = 5.0) -> int:
        """End every rank (SIGTERM, then SIGKILL after ``grace`` seconds); returns rank 0's exit code."""
        for proc in self.ranks:
            _signal_group(proc.record.pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        codes = [proc.end(max(0.0, deadline - time.monotonic())) for proc in self.ranks]
        return codes[0]

    def reap_group(self) -> None:
        """Kill whatever is left of every rank: after one failed, its peers are not waited for."""
        for proc in self.ranks:
            proc.reap_group()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=5)


def rank_key(trial: str, rank: int) -> str:
    """The process-registry name of a trial's rank (rank 0 is the trial's own name)."""
    return trial if rank == 0 else f"{trial}/rank-{rank}"


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
        write_atomically(self.path, json.dumps([asdict(r) for r in records], indent=1).encode())

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
