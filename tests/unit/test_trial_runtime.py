"""Device, threads and mixed-precision choices."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from kubenas_trial import runtime
from kubenas_trial.config import ConfigError


@pytest.mark.parametrize(("content", "expected"), [("max 100000", None), ("150000 100000", 2), ("50000 100000", 1)])
def test_cpu_limit_from_cgroup(tmp_path: Path, content: str, expected: int | None) -> None:
    (tmp_path / "cpu.max").write_text(content + "\n")
    assert runtime.cpu_limit(tmp_path) == expected


@pytest.mark.parametrize(("quota", "expected"), [("-1", None), ("250000", 3)])
def test_cpu_limit_from_cgroup_v1(tmp_path: Path, quota: str, expected: int | None) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(quota + "\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert runtime.cpu_limit(tmp_path) == expected


def test_cpu_limit_without_cgroup(tmp_path: Path) -> None:
    assert runtime.cpu_limit(tmp_path) is None


def test_thread_count_prefers_parameter_then_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runtime.thread_count(5) == 5
    assert runtime.thread_count(0) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(runtime, "cpu_limit", lambda: 1)
    assert runtime.thread_count(0) == 1  # the container's CPU limit caps the usable CPUs
    monkeypatch.setattr(runtime, "cpu_limit", lambda: None)
    assert runtime.thread_count(0) == len(os.sched_getaffinity(0))


def test_amp_choices_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert runtime.amp_dtype("auto", cpu) is None
    assert runtime.amp_dtype("off", cpu) is None
    assert runtime.amp_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(ConfigError, match="'fp16', which needs a GPU"):
        runtime.amp_dtype("fp16", cpu)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_requested_without_gpu_is_a_clear_error() -> None:
    assert runtime.select_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="CUDA is not available"):
        runtime.select_device("cuda:0")


def test_channels_last_only_for_cnns() -> None:
    cpu = torch.device("cpu")
    assert runtime.use_channels_last("on", cpu, is_cnn=True)
    assert not runtime.use_channels_last("on", cpu, is_cnn=False)
    assert not runtime.use_channels_last("auto", cpu, is_cnn=True)


def test_summary_names_the_device() -> None:
    info = runtime.summary({"amp": "bf16"}, torch.device("cpu"))
    assert info["device"].startswith("cpu") and info["amp"] == "bfloat16"


@pytest.mark.parametrize(("content", "expected"), [("max 100000", None), ("150000 100000", 1.5), ("0 100000", None)])
def test_cpu_quota_is_the_exact_limit(tmp_path: Path, content: str, expected: float | None) -> None:
    (tmp_path / "cpu.max").write_text(content + "\n")
    assert runtime.cpu_quota(tmp_path) == expected


def test_cpu_quota_from_cgroup_v1(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert runtime.cpu_quota(tmp_path) == 0.5


@pytest.mark.parametrize(("requested", "quota", "usable", "expected"), [
    (3, None, 2, 3),      # the parameter wins
    (0, 2.5, 8, 2),       # the limit, rounded down: a thread beyond the quota is throttled
    (0, 0.5, 8, 1),       # at least one thread
    (0, 16.0, 4, 4),      # never more than the CPUs the process may run on
    (0, None, 64, 1),     # no limit: the node is shared, its CPU count is not this trial's share
])
def test_latency_threads(requested: int, quota: float | None, usable: int, expected: int) -> None:
    assert runtime.latency_threads(requested, quota, usable) == expected
