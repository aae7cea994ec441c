"""Trial processes: whole process groups end, orphans of a killed runner are found, pids are not trusted blindly."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from kubenas.local.processes import (
    PortAllocator,
    ProcessRecord,
    ProcessRegistry,
    RankedTrial,
    TrialProcess,
    end_orphans,
    find_run_processes,
    local_argv,
    threads_per_trial,
)
from kubenas.local.scrape import MAX_BYTES, TrialScraper, scrape
from kubenas_trial import TrialReporter

# A trial that starts a grandchild in its own group and waits: both must end together.
FAMILY = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)


def start_family(tmp_path: Path, env: dict[str, str] | None = None) -> TrialProcess:
    proc = TrialProcess.start(
        "t-0", [sys.executable, "-c", FAMILY], {**os.environ, **(env or {})}, tmp_path, tmp_path / "log.txt", 0
    )
    deadline = time.monotonic() + 20
    while "ready" not in (tmp_path / "log.txt").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


def group_members(pgid: int, settle: float = 0.0) -> list[int]:
    """Live members of a process group; with ``settle``, waits that long for it to empty (signals are async)."""
    deadline = time.monotonic() + settle
    while True:
        members = _members(pgid)
        if not members or time.monotonic() >= deadline:
            return members
        time.sleep(0.05)


def _members(pgid: int) -> list[int]:
    members = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                members.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return members


def test_ending_a_trial_ends_its_whole_process_group(tmp_path: Path) -> None:
    proc = start_family(tmp_path)
    assert len(group_members(proc.record.pgid)) == 2
    assert proc.record.pgid != os.getpgid(0), "a trial must not share the runner's process group"
    code = proc.end(grace=2)
    assert code < 0
    assert group_members(proc.record.pgid, settle=5) == []


# A stand-in runner: starts one trial (a long sleep) from its main thread, prints its pid, waits.
RUNNER = (
    "import os, sys, time\n"
    "from pathlib import Path\n"
    "from kubenas.local.processes import TrialProcess\n"
    "proc = TrialProcess.start('t-0', [sys.executable, '-c', 'import time; time.sleep(600)'], dict(os.environ),"
    " Path.cwd(), Path(sys.argv[1]), 0)\n"
    "print(proc.popen.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def test_a_trial_ends_when_its_runner_is_killed(tmp_path: Path) -> None:
    """kill -9 of the runner sends the trial its parent-death signal: it does not train on for nobody."""
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(tmp_path / "log.txt")], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    try:
        trial = psutil.Process(int(runner.stdout.readline()))
        assert trial.is_running()
    finally:
        runner.kill()
        runner.wait()
    gone, _ = psutil.wait_procs([trial], timeout=10)
    assert gone, "the trial outlived its runner"


def test_orphans_of_a_killed_run_are_found_from_the_registry_and_ended(tmp_path: Path) -> None:
    proc = start_family(tmp_path)
    registry = ProcessRegistry(tmp_path / "processes.json")
    registry.add(proc.record)
    # A later runner only has the file: same pid but another start time is someone else's process.
    stale = ProcessRecord("t-9", os.getpid(), os.getpgid(0), psutil.Process().create_time() - 100)
    ended = end_orphans([*registry.load().values(), stale], grace=2)
    proc.popen.wait(5)
    assert [r.trial for r in ended] == ["t-0"]
    assert group_members(proc.record.pgid, settle=5) == []
    assert psutil.pid_exists(os.getpid())


def test_unregistered_trial_processes_are_found_by_their_run_marker(tmp_path: Path) -> None:
    proc = start_family(tmp_path, {"KUBENAS_LOCAL_RUN": str(tmp_path), "KUBENAS_TRIAL": "t-0"})
    found = find_run_processes("KUBENAS_LOCAL_RUN", str(tmp_path))
    assert {r.pid for r in found} == set(group_members(proc.record.pgid))
    end_orphans(found, grace=2)
    proc.popen.wait(5)
    assert group_members(proc.record.pgid, settle=5) == []


def test_python_in_a_container_command_is_this_interpreter() -> None:
    assert local_argv(["python", "-m", "kubenas_trial"], ["--param", "x=1"]) == [
        sys.executable,
        "-m",
        "kubenas_trial",
        "--param",
        "x=1",
    ]
    assert local_argv(["/usr/bin/env"], []) == ["/usr/bin/env"]
    with pytest.raises(ValueError, match="neither command nor args"):
        local_argv([], [])


def test_threads_are_shared_between_parallel_trials() -> None:
    assert threads_per_trial(2, cpus=8) == 4
    assert threads_per_trial(3, cpus=2) == 1


def test_scrape_reads_the_sdk_gauges() -> None:
    port = PortAllocator().acquire()
    reporter = TrialReporter(port=port, address="127.0.0.1", termination_log=os.devnull)
    try:
        reporter.report(7, accuracy=0.5, loss=1.25)
        values = scrape(port)
    finally:
        reporter.close()
    assert values is not None
    assert values.step == 7
    assert dict(values.metrics) == {"accuracy": 0.5, "loss": 1.25}


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("body", [b"x" * (MAX_BYTES + 10), b"{not prometheus text"])
def test_scrape_refuses_oversized_or_garbage_answers(body: bytes) -> None:
    handler = type("H", (_Handler,), {"body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert scrape(server.server_address[1]) is None
    finally:
        server.shutdown()
        server.server_close()


def test_scrape_of_a_closed_port_is_none() -> None:
    port = PortAllocator().acquire()
    assert scrape(port, timeout=0.5) is None


class Drip:
    """A raw HTTP endpoint on 127.0.0.1 that sends a scripted answer in pieces, pausing between them."""

    def __init__(self, pieces: list[bytes], pause: float) -> None:
        self.pieces = pieces
        self.pause = pause
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            try:
                for piece in self.pieces:
                    conn.sendall(piece)
                    if self.closed.wait(self.pause):
                        return
            except OSError:  # the scraper gave up and closed: what a deadline does
                return

    def close(self) -> None:
        self.closed.set()
        self.server.close()


def http_answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def test_the_local_scrape_reads_a_slow_answer_in_many_chunks_to_its_end() -> None:
    """Up to the cap, every byte is read: the step after ~256 KiB of padding, split "12" | "3", is 123, not 12."""
    padding = b"# padding line of a large exposition\n" * ((MAX_BYTES - 200) // 37)
    head = http_answer(padding + b"kubenas_trial_step 123\n")[:-2]
    drip = Drip([*(head[i : i + 4096] for i in range(0, len(head), 4096)), b"3\n"], pause=0.001)
    try:
        assert len(padding) > MAX_BYTES - 300
        values = scrape(drip.port, timeout=10)
        assert values is not None and values.step == 123
        scraper = TrialScraper(drip.port, interval=0.2)  # each scrape may take 1 s: the runner's own deadline
        try:
            recorded: list = []
            deadline = time.monotonic() + 20
            while not recorded and time.monotonic() < deadline:
                time.sleep(0.05)
                recorded = scraper.drain()
        finally:
            scraper.stop()
    finally:
        drip.close()
    assert recorded and recorded[0].step == 123


def test_the_local_scrape_refuses_an_answer_over_its_cap_sent_in_pieces() -> None:
    answer = http_answer(b"#" * (MAX_BYTES + 1))
    drip = Drip([answer[i : i + 4096] for i in range(0, len(answer), 4096)], pause=0)
    try:
        assert scrape(drip.port, timeout=10) is None
    finally:
        drip.close()


@pytest.mark.parametrize(
    "pieces",
    [[b"H"] * 600, [http_answer(b"kubenas_trial_step 1\n")[:60], *[b"x"] * 600]],
    ids=["headers-a-byte-at-a-time", "body-a-byte-at-a-time"],
)
def test_a_slow_loris_trial_holds_the_local_scrape_no_longer_than_its_deadline(pieces: list[bytes]) -> None:
    drip = Drip(pieces, pause=0.05)  # 30 s of dribble, each read well inside any per-read timeout
    started = time.monotonic()
    try:
        assert scrape(drip.port, timeout=0.5) is None
    finally:
        drip.close()
    assert time.monotonic() - started < 5


def start_rank(tmp_path: Path, rank: int, code: str) -> TrialProcess:
    argv = [sys.executable, "-c", code]
    return TrialProcess.start(f"t-0/rank-{rank}", argv, dict(os.environ), tmp_path, tmp_path / f"log-{rank}.txt", 0)


def test_ranked_trial_blames_the_first_rank_to_fail_and_ends_the_rest(tmp_path: Path) -> None:
    waiting = "import sys, time; time.sleep(1.0); sys.exit(1)"  # a peer that fails after the culprit
    survivor = "import time; time.sleep(600)"
    ranks = [start_rank(tmp_path, 0, waiting), start_rank(tmp_path, 1, "raise SystemExit(3)")]
    trial = RankedTrial([*ranks, start_rank(tmp_path, 2, survivor)])
    deadline = time.monotonic() + 30
    while trial.ranks[0].poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (trial.poll(), trial.failed_rank) == (3, 1)  # not rank 0, though it failed too, and first in order
    trial.reap_group()
    assert trial.ranks[2].poll() is not None and not group_members(trial.ranks[2].record.pgid, settle=5)


def test_ranked_trial_succeeds_once_every_rank_did(tmp_path: Path) -> None:
    trial = RankedTrial([start_rank(tmp_path, 0, "pass"), start_rank(tmp_path, 1, "import time; time.sleep(0.5)")])
    deadline = time.monotonic() + 30
    while (code := trial.poll()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert code == 0 and trial.failed_rank is None
    assert trial.ranks[1].poll() == 0  # the trial waited for rank 1, not only for rank 0
