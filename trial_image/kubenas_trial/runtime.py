"""Where and how the trial runs: device, CPU threads, mixed precision and memory format."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from kubenas_trial.config import ConfigError


def cpu_quota(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The container's CPU limit in CPUs (e.g. 1.5), or None when unlimited or unknown.

    Reads cgroup v2 ``cpu.max``, else cgroup v1 ``cpu/cpu.cfs_quota_us`` and ``cpu.cfs_period_us``.
    """
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            v1 = cgroup_root / "cpu"
            quota = (v1 / "cpu.cfs_quota_us").read_text().strip()
            period = (v1 / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1"):
        return None
    try:
        cpus = int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None
    return cpus if cpus > 0 else None


def cpu_limit(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The container's CPU limit in whole CPUs (rounded up), or None when unlimited or unknown."""
    cpus = cpu_quota(cgroup_root)
    return None if cpus is None else max(1, math.ceil(cpus))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), never the machine's count when affinity is known."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def latency_threads(requested: int, quota: float | None, usable: int) -> int:
    """CPU threads for the latency measurement: the parameter, else the CPU limit rounded down, else 1.

    Rounded down because a thread beyond the quota spends its time throttled. Without a limit
    the process shares the node's CPUs with whatever else runs there, and its affinity is the
    whole node, not its share: intra-op threads that outnumber the CPUs actually free wait for
    each other at every barrier (int8 kernels 40-200x slower), so one thread is measured.
    """
    if requested > 0:
        return requested
    if quota is None:
        return 1
    return max(1, min(math.floor(quota), usable))


def thread_count(requested: int) -> int:
    """CPU threads for torch: the parameter, else ``OMP_NUM_THREADS``, else the CPU limit, else the usable CPUs."""
    if requested > 0:
        return requested
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    available = usable_cpus()
    limit = cpu_limit()
    return min(available, limit) if limit else available


def has_cxx_compiler() -> bool:
    """Whether torch.compile's CPU backend can find a C++ compiler (``CXX`` or c++/g++/clang++ on PATH)."""
    candidates = [os.environ.get("CXX", ""), "c++", "g++", "clang++"]
    return any(name and shutil.which(name) for name in candidates)


def select_device(name: str) -> torch.device:
    """The torch device for the ``device`` parameter; asking for an absent accelerator is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"parameter 'device' is {name!r} but CUDA is not available in this image/node")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"parameter 'device' is {name!r} but only {torch.cuda.device_count()} GPU(s) exist")
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("parameter 'device' is 'mps' but MPS is not available")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """A human-readable name of the device (GPU model or CPU architecture)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"cpu ({torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)"
    return device.type


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the ``amp`` parameter on ``device``, or None for full precision.

    ``auto`` uses bf16 on GPUs that support it and fp16 (with a gradient scaler) on older
    GPUs, and stays in fp32 on CPU, where bf16 autocast only pays off on CPUs with AMX.
    """
    if mode == "off":
        return None
    if mode == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "fp16":
        if device.type == "cpu":
            raise ConfigError("parameter 'amp' is 'fp16', which needs a GPU; use 'bf16' or 'off' on CPU")
        return torch.float16
    return torch.bfloat16


def use_channels_last(mode: str, device: torch.device, is_cnn: bool) -> bool:
    """Whether to train in channels_last (NHWC): on for CNNs on GPUs unless turned off, or when asked."""
    if not is_cnn or mode == "off":
        return False
    return mode == "on" or device.type == "cuda"


def summary(config: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """What the run resolved to, for logs and metrics.json."""
    dtype = amp_dtype(config["amp"], device)
    return {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "amp": "off" if dtype is None else str(dtype).removeprefix("torch."),
    }
