"""The local run's files (kubenas.local.files, RunDirectory.write_best) and what a trial process is given:
complete writes, best/ and best.json replaced together, trial outputs copied without following links,
nothing a trial leaves behind hangs a read; GPUs spread over parallel trials; arguments no process can hold."""

from __future__ import annotations

import inspect
import json
import os
import sys
from pathlib import Path

import pytest
from kubenas.local import files, processes
from kubenas.local.results import RunDirectory

# --------------------------------------------------------------------------- writes


def test_short_writes_are_completed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))  # 3 bytes per call at most
    path = tmp_path / "trials.jsonl"
    files.append_durably(path, b'{"name": "t-0"}\n')
    files.append_durably(path, b'{"name": "t-1"}\n')
    files.write_atomically(tmp_path / "run.json", b'{"uid": "u"}\n')
    assert path.read_bytes() == b'{"name": "t-0"}\n{"name": "t-1"}\n'
    assert (tmp_path / "run.json").read_bytes() == b'{"uid": "u"}\n'


def test_a_rename_is_followed_by_an_fsync_of_its_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(files, "fsync_directory", synced.append)
    files.write_atomically(tmp_path / "run.json", b"{}")
    files.replace_with_link(tmp_path / "best", "elsewhere")
    assert synced == [tmp_path, tmp_path]


# --------------------------------------------------------------------------- reads


def test_a_fifo_where_a_result_belongs_is_no_result_and_no_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "termination-log")  # opening it to read would wait for a writer forever
    assert files.read_regular_file(tmp_path / "termination-log", 4097) is None


def test_reads_are_bounded_and_tails_are_the_end(tmp_path: Path) -> None:
    (tmp_path / "log.txt").write_bytes(b"a" * 100 + b"\nlast line\n")
    assert files.read_regular_file(tmp_path / "log.txt", 10) == b"a" * 10
    assert files.read_regular_file(tmp_path / "log.txt", 10, tail=True) == b"last line\n"
    assert files.read_regular_file(tmp_path / "missing", 10) is None


# --------------------------------------------------------------------------- copying a trial's output


@pytest.fixture
def hostile_output(tmp_path: Path) -> Path:
    """A trial output with a model, a nested dir, links in and out, a link loop, a FIFO."""
    out = tmp_path / "output"
    (out / "ckpt").mkdir(parents=True)
    (out / "model.pt").write_bytes(b"weights")
    (out / "ckpt" / "epoch-3.pt").write_bytes(b"older weights")
    os.symlink("ckpt/epoch-3.pt", out / "latest.pt")  # inside: kept as a link
    os.symlink("/etc", out / "etc")  # absolute: out
    os.symlink("../../..", out / "up")  # climbs out
    os.symlink("ckpt/../../secret", out / "sneaky")  # climbs out through a directory
    os.symlink("loop-b", out / "loop-a")  # a loop inside: harmless as a link, never followed
    os.symlink("loop-a", out / "loop-b")
    os.mkfifo(out / "pipe")
    return out


def test_a_trial_output_is_copied_without_following_links(hostile_output: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    skipped = files.copy_tree_within(hostile_output, copy)
    assert (copy / "model.pt").read_bytes() == b"weights"
    assert (copy / "latest.pt").is_symlink() and (copy / "latest.pt").read_bytes() == b"older weights"
    assert os.readlink(copy / "loop-a") == "loop-b" and os.readlink(copy / "loop-b") == "loop-a"
    for name in ("etc", "up", "sneaky", "pipe"):
        assert not os.path.lexists(copy / name), name
    assert sorted(s.split(" ")[0] for s in skipped) == ["etc", "pipe", "sneaky", "up"]
    assert any("outside the trial's output" in s for s in skipped)
    assert any("not a regular file" in s for s in skipped)


def test_a_tree_deeper_than_the_recursion_limit_is_copied(tmp_path: Path) -> None:
    leaf = tmp_path / "out"
    leaf.mkdir()
    for _ in range(300):
        leaf = leaf / "d"
        leaf.mkdir()
    (leaf / "x").write_text("bottom")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 100)  # a tree deeper than the stack may grow
    try:
        skipped = files.copy_tree_within(tmp_path / "out", tmp_path / "copy")
    finally:
        sys.setrecursionlimit(limit)
    assert skipped == []
    assert Path(tmp_path, "copy", *["d"] * 300, "x").read_text() == "bottom"


def test_a_tree_of_any_depth_is_removed_without_following_links(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious").write_text("not the trial's")
    leaf = tmp_path / "out"
    leaf.mkdir()
    for _ in range(300):
        leaf = leaf / "d"
        leaf.mkdir()
    os.symlink(keep, leaf / "link-out")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 100)
    try:
        files.remove_tree(tmp_path / "out")
    finally:
        sys.setrecursionlimit(limit)
    assert not (tmp_path / "out").exists()
    assert (keep / "precious").read_text() == "not the trial's"


@pytest.mark.parametrize(
    ("target", "inside"),
    [
        ("model.pt", True),
        ("ckpt/epoch-3.pt", True),
        ("./model.pt", True),
        ("../model.pt", False),
        ("ckpt/../../x", False),
        ("/etc/passwd", False),
        ("", False),
    ],
    ids=["sibling", "deeper", "dot", "parent", "up-through-a-dir", "absolute", "empty"],
)
def test_which_links_stay_inside(target: str, inside: bool) -> None:
    assert files.link_stays_inside(target) is inside


# --------------------------------------------------------------------------- best/ and best.json


def best_pair(root: Path) -> tuple[dict, set[str]]:
    return json.loads((root / "best.json").read_text()), {p.name for p in (root / "best").iterdir()}


def test_best_json_and_best_dir_are_replaced_together(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "run")
    run.create()
    first, second = tmp_path / "t-0", tmp_path / "t-1"
    first.mkdir()
    (first / "model.pt").write_bytes(b"0")
    (first / "best.json").write_text("the trial's own file of that name")  # kept: our best.json is not in best/
    second.mkdir()
    (second / "model.pt").write_bytes(b"1")

    run.write_best({"trial": "t-0"}, first)
    assert best_pair(run.root) == ({"trial": "t-0"}, {"model.pt", "best.json"})
    assert (run.root / "best" / "best.json").read_text() == "the trial's own file of that name"
    run.write_best({"trial": "t-1"}, second)
    assert best_pair(run.root) == ({"trial": "t-1"}, {"model.pt"})
    assert (run.root / "best" / "model.pt").read_bytes() == b"1"
    assert len(list(run.root.glob(".best-*"))) == 1  # the old version is gone
    assert run.best() == {"trial": "t-1"}


def test_a_crash_before_the_switch_leaves_the_old_pair_whole(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "run")
    run.create()
    (tmp_path / "t-0").mkdir()
    (tmp_path / "t-0" / "model.pt").write_bytes(b"0")
    run.write_best({"trial": "t-0"}, tmp_path / "t-0")

    def crash(path: Path, target: str) -> None:
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr("kubenas.local.results.replace_with_link", crash)
    with pytest.raises(KeyboardInterrupt):
        run.write_best({"trial": "t-1"}, None)
    assert best_pair(run.root) == ({"trial": "t-0"}, {"model.pt"})


def test_a_run_written_before_best_was_a_link_is_converted(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "run")
    run.create()
    (run.root / "best").mkdir()
    (run.root / "best" / "stale.pt").write_bytes(b"old")
    (run.root / "best.json").write_text('{"trial": "old"}')
    run.write_best({"trial": "t-9"}, None)
    assert best_pair(run.root) == ({"trial": "t-9"}, set())
    assert (run.root / "best").is_symlink() and (run.root / "best.json").is_symlink()


def test_an_architecture_file_that_is_not_a_bounded_regular_json_file_is_none(tmp_path: Path) -> None:
    from kubenas.local.results import read_architecture

    os.mkfifo(tmp_path / "architecture.json")
    assert read_architecture(tmp_path) is None
    (tmp_path / "architecture.json").unlink()
    (tmp_path / "architecture.json").write_text("[" * 100_000 + "]" * 100_000)
    assert read_architecture(tmp_path) is None


# --------------------------------------------------------------------------- GPUs


@pytest.mark.parametrize(
    ("value", "gpus"),
    [
        ("0,1,2", ["0", "1", "2"]),
        (" 2 , 3 ", ["2", "3"]),
        ("", []),
        ("-1", []),
        ("0,-1,2", ["0"]),
        ("GPU-ab,GPU-cd", ["GPU-ab", "GPU-cd"]),
    ],
    ids=["three", "spaces", "empty", "none", "stops-at-invalid", "uuids"],
)
def test_cuda_visible_devices_is_read_as_cuda_reads_it(value: str, gpus: list[str]) -> None:
    assert processes.visible_gpus({"CUDA_VISIBLE_DEVICES": value}) == gpus


def test_nvidia_smi_is_asked_only_without_cuda_visible_devices(tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        "echo 'GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-1)'\n"
        "echo '  MIG 1g.5gb Device 0: (UUID: MIG-2)'\n"
        "echo 'GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-3)'\n"
    )
    fake.chmod(0o755)
    assert processes.visible_gpus({}, nvidia_smi=str(fake)) == ["0", "1"]
    assert processes.visible_gpus({"CUDA_VISIBLE_DEVICES": "3"}, nvidia_smi=str(fake)) == ["3"]
    assert processes.visible_gpus({}, nvidia_smi=str(tmp_path / "missing")) == []


def test_parallel_trials_get_one_gpu_each_round_robin_least_busy_first() -> None:
    gpus = processes.GpuAllocator(["0", "1", "2"])
    assert [gpus.acquire() for _ in range(4)] == ["0", "1", "2", "0"]
    gpus.release("1")  # the trial on GPU 1 ended: the next goes there, not to the busy 2
    assert gpus.acquire() == "1"
    assert processes.least_busy(["0", "1"], {"0": 2, "1": 2}, start=1) == "1"


@pytest.mark.parametrize("gpus", [[], ["0"]], ids=["no-gpu", "one-gpu"])
def test_with_fewer_than_two_gpus_nothing_is_assigned(gpus: list[str]) -> None:
    assert processes.GpuAllocator(gpus).acquire() is None


# --------------------------------------------------------------------------- what a process can be given


@pytest.mark.parametrize(
    ("argv", "env", "words"),
    [
        (["train", "--mode=a\0b"], {}, "argument 1 ('--mode=a\\x00b') holds a NUL byte"),
        (["train"], {"MODE": "a\0b"}, "environment variable 'MODE' holds a NUL byte"),
        (["train", "--name=\ud800"], {}, "argument 1 ('--name=\\ud800') holds characters"),
        (["train"], {"A=B": "c"}, "environment variable name 'A=B'"),
    ],
    ids=["nul-in-argument", "nul-in-variable", "lone-surrogate", "equals-in-a-name"],
)
def test_what_no_process_can_hold_is_named(argv: list[str], env: dict[str, str], words: str) -> None:
    problem = processes.startable_problem(argv, env)
    assert problem is not None and words in problem


def test_a_missing_program_is_refused_before_it_is_started(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        processes.resolve_executable("no-such-program-kubenas", {"PATH": str(tmp_path)}, tmp_path)
    (tmp_path / "script").write_text("#!/bin/sh\n")
    with pytest.raises(PermissionError):
        processes.resolve_executable("./script", {}, tmp_path)
