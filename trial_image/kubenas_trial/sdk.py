"""The trial side of the kubenas trial contract (docs/trial.md), usable from any Python script.

    import kubenas_trial
    params = kubenas_trial.parameters()
    kubenas_trial.final_step(epochs)            # optional: the step the last report will carry
    kubenas_trial.report(epoch, accuracy=acc)   # every step; Prometheus gauges
    kubenas_trial.finish(accuracy=acc)          # once; the authoritative result

In a trial of several processes (several pods, or torchrun workers) only global rank 0
reports: every other process's reporter is a no-op, so each process runs the same code.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, start_http_server

PARAMETERS_ENV = "KUBENAS_PARAMETERS"
PARAMETERS_FILE_ENV = "KUBENAS_PARAMETERS_FILE"
METRICS_PORT_ENV = "KUBENAS_METRICS_PORT"
METRICS_ADDRESS_ENV = "KUBENAS_METRICS_ADDRESS"
TERMINATION_LOG_ENV = "KUBENAS_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
CHECKPOINT_DIR_ENV = "KUBENAS_CHECKPOINT_DIR"
# What every process of a multi-process trial is given (torchrun's names; docs/trial.md).
MASTER_ADDR_ENV, MASTER_PORT_ENV = "MASTER_ADDR", "MASTER_PORT"
NNODES_ENV, NODE_RANK_ENV, NPROC_PER_NODE_ENV = "NNODES", "NODE_RANK", "NPROC_PER_NODE"
WORLD_SIZE_ENV, RANK_ENV, LOCAL_RANK_ENV = "WORLD_SIZE", "RANK", "LOCAL_RANK"

MAX_RESULT_BYTES = 4096
# Each metric name becomes a label value: bound the series a trial can create.
MAX_METRIC_NAMES = 100
MAX_NAME_LENGTH = 128
# Significant digits tried, in order, when the result does not fit in MAX_RESULT_BYTES.
_PRECISIONS = (None, 10, 6, 4, 3)


class ParametersError(ValueError):
    """The trial's parameters could not be read (bad JSON, not an object, unreadable file)."""


def parameters() -> dict[str, Any]:
    """The trial's parameters: ``KUBENAS_PARAMETERS`` (JSON), else the file named by ``KUBENAS_PARAMETERS_FILE``.

    Returns an empty dict when neither is set, so a script also runs by hand with its defaults.

    Raises:
        ParametersError: the JSON is invalid or not an object, or the file cannot be read.
    """
    text = os.environ.get(PARAMETERS_ENV)
    source = PARAMETERS_ENV
    if not text:
        path = os.environ.get(PARAMETERS_FILE_ENV)
        if not path:
            return {}
        source = path
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ParametersError(f"cannot read parameters file {path}: {exc.strerror or exc}") from exc
        if not text.strip():
            return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParametersError(f"{source} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ParametersError(f"{source} must be a JSON object, got {type(value).__name__}")
    return value


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """The integer in environment variable ``name``, or ``default`` when it is unset or empty.

    Raises:
        ValueError: the value is not an integer ≥ ``minimum`` (the message names the variable).
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"environment variable {name} must be ≥ {minimum}, got {value}")
    return value


def rank() -> int:
    """This process's global rank in a multi-process trial; 0 in a single-process one.

    ``RANK`` when set (torchrun and single-GPU pods set it), else
    ``NODE_RANK * NPROC_PER_NODE + LOCAL_RANK`` from what is set of those, else 0.
    Only rank 0 reports: the other ranks' :class:`TrialReporter` calls do nothing.
    """
    if os.environ.get(RANK_ENV, "").strip():
        return env_int(RANK_ENV, 0)
    return env_int(NODE_RANK_ENV, 0) * env_int(NPROC_PER_NODE_ENV, 1, minimum=1) + env_int(LOCAL_RANK_ENV, 0)


def checkpoint_dir() -> Path | None:
    """Where to keep checkpoints that survive the pod being replaced (``KUBENAS_CHECKPOINT_DIR``), or None.

    None means no checkpointing is wanted. The directory may not exist yet. Every rank gets the
    path (all may load from it); only rank 0 should write to it.
    """
    value = os.environ.get(CHECKPOINT_DIR_ENV, "").strip()
    return Path(value) if value else None


def _finite_number(value: Any) -> float | int | None:
    """The value as a JSON-safe finite number, or None if it is not one (bools count as 0/1)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if abs(value) < 2**53 else float(value)
    try:
        number = float(value)  # numpy and torch scalars
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def clean_metrics(metrics: Mapping[str, Any]) -> dict[str, float | int]:
    """Keep the metrics that are finite numbers under sane string names; drop the rest."""
    cleaned: dict[str, float | int] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
            continue
        number = _finite_number(value)
        if number is not None:
            cleaned[name] = number
    return cleaned


def _round(value: float | int, digits: int | None) -> float | int:
    if digits is None or isinstance(value, int) or value == 0:
        return value
    return float(f"{value:.{digits}g}")


def encode_result(metrics: Mapping[str, Any], limit: int = MAX_RESULT_BYTES) -> bytes:
    """The final metrics as one compact JSON object of finite numbers, at most ``limit`` bytes.

    Non-finite and non-numeric values are dropped. If the object is too large, floats are
    rounded to fewer significant digits; if that is not enough, metrics are dropped from the
    end (the first ones given are kept), so the result is always complete, valid JSON.
    """
    cleaned = clean_metrics(metrics)
    for digits in _PRECISIONS:
        rounded = {name: _round(value, digits) for name, value in cleaned.items()}
        data = json.dumps(rounded, separators=(",", ":"), allow_nan=False).encode()
        if len(data) <= limit:
            return data
    # Still too big at the coarsest precision: keep a prefix of the metrics that fits.
    kept: dict[str, float | int] = {}
    size = 2  # "{}"
    for name, value in rounded.items():
        item = len(json.dumps({name: value}, separators=(",", ":"))) - 2 + (1 if kept else 0)
        if size + item > limit:
            continue
        kept[name] = value
        size += item
    return json.dumps(kept, separators=(",", ":"), allow_nan=False).encode()


def write_atomically(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` so a reader sees either the old content or all of the new one.

    A temporary file renamed over the target is atomic. Kubernetes bind-mounts the
    termination log, and renaming onto a mount point (or in an unwritable /dev) fails, so
    we fall back to a single write() of the whole payload, which for ≤ 4 KiB is one syscall.
    """
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".kubenas-", dir=target.parent)
    except OSError:
        fd, tmp = -1, ""
    if fd >= 0:
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
            return
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    with open(target, "wb", buffering=0) as handle:
        handle.write(data)


class TrialReporter:
    """Reports one trial's metrics: live Prometheus gauges and the final termination message.

    The HTTP server starts on the first ``report`` when ``KUBENAS_METRICS_PORT`` is a port
    number > 0; with no port the reporter still works (nothing is served), so a script runs
    unchanged on a laptop. Each reporter has its own registry, so nothing else in the process
    leaks into ``/metrics``.

    Args:
        port: metrics port; default from ``KUBENAS_METRICS_PORT`` (unset or 0: no server).
        address: bind address; default ``KUBENAS_METRICS_ADDRESS`` or 0.0.0.0.
        termination_log: result file; default ``KUBENAS_TERMINATION_LOG`` or /dev/termination-log.
        enabled: whether this reporter reports at all; default: this process is global rank 0
            (:func:`rank`). A disabled reporter serves nothing and writes nothing.
    """

    def __init__(
        self,
        port: int | None = None,
        address: str | None = None,
        termination_log: str | os.PathLike[str] | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.enabled = rank() == 0 if enabled is None else enabled
        self.port = _port_from_env() if port is None else port
        self.address = address or os.environ.get(METRICS_ADDRESS_ENV) or "0.0.0.0"
        self.termination_log = Path(
            termination_log or os.environ.get(TERMINATION_LOG_ENV) or DEFAULT_TERMINATION_LOG
        )
        self.registry = CollectorRegistry(auto_describe=True)
        self._metric = Gauge(
            "kubenas_trial_metric", "Latest value of a metric reported by the trial.", ["name"],
            registry=self.registry,
        )
        self._step = Gauge("kubenas_trial_step", "Latest step reported by the trial.", registry=self.registry)
        self._final_step: Gauge | None = None  # registered when set: an unset gauge would read 0
        self._names: set[str] = set()
        self._lock = threading.Lock()
        self._server: Any = None
        self.bound_port: int | None = None
        self.last: dict[str, float | int] = {}

    def start_server(self) -> int | None:
        """Start the metrics server once (idempotent); returns the bound port, or None without one."""
        with self._lock:
            if self._server is None and self.port and self.enabled:
                server, _thread = start_http_server(self.port, addr=self.address, registry=self.registry)
                self._server = server
                self.bound_port = server.server_port
            return self.bound_port

    def report(self, step: int | float, metrics: Mapping[str, Any] | None = None, /, **named: Any) -> None:
        """Publish intermediate metrics for ``step`` (e.g. the epoch). Non-finite values are skipped."""
        if not self.enabled:
            return
        self.start_server()
        values = clean_metrics({**(metrics or {}), **named})
        with self._lock:
            for name, value in values.items():
                if name not in self._names:
                    if len(self._names) >= MAX_METRIC_NAMES:
                        continue
                    self._names.add(name)
                self._metric.labels(name=name).set(value)
                self.last[name] = value
            number = _finite_number(step)
            if number is not None:
                self._step.set(number)

    def final_step(self, step: int | float) -> None:
        """Say which step the last report will carry (e.g. the number of epochs).

        Optional. A trial that has reported this step is never stopped early: its training is
        done, and stopping it between its last report and its exit would only lose its result.
        """
        number = _finite_number(step)
        if number is None or number < 1:
            raise ValueError(f"final step must be a number >= 1, got {step!r}")
        if not self.enabled:
            return
        self.start_server()
        with self._lock:
            if self._final_step is None:
                self._final_step = Gauge(
                    "kubenas_trial_final_step", "The step the trial's last report will carry.", registry=self.registry
                )
            self._final_step.set(number)

    def finish(self, metrics: Mapping[str, Any] | None = None, /, **named: Any) -> dict[str, Any]:
        """Write the final metrics to the termination log (≤ 4 KiB JSON) and return what was written.

        A disabled reporter (not rank 0) writes nothing and returns what rank 0 would have written.
        """
        data = encode_result({**(metrics or {}), **named})
        if not self.enabled:
            return json.loads(data)
        try:
            write_atomically(self.termination_log, data)
        except OSError as exc:
            # Running by hand without /dev/termination-log must not fail the script.
            print(f"kubenas_trial: cannot write {self.termination_log}: {exc}", file=sys.stderr)
        return json.loads(data)

    def close(self) -> None:
        """Stop the metrics server, if one was started."""
        with self._lock:
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()
                self._server = None


def _port_from_env() -> int:
    raw = os.environ.get(METRICS_PORT_ENV, "").strip()
    if not raw:
        return 0
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"{METRICS_PORT_ENV} must be a port number, got {raw!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{METRICS_PORT_ENV} must be between 0 and 65535, got {port}")
    return port


_default: TrialReporter | None = None
_default_lock = threading.Lock()


def default_reporter() -> TrialReporter:
    """The process-wide reporter used by :func:`report` and :func:`finish` (configured from the environment)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = TrialReporter()
        return _default


def report(step: int | float, metrics: Mapping[str, Any] | None = None, /, **named: Any) -> None:
    """Publish intermediate metrics for ``step`` as Prometheus gauges (server started on first call)."""
    default_reporter().report(step, metrics, **named)


def final_step(step: int | float) -> None:
    """Say which step the last report will carry; a trial that reached it is never stopped early."""
    default_reporter().final_step(step)


def finish(metrics: Mapping[str, Any] | None = None, /, **named: Any) -> dict[str, Any]:
    """Write the final metrics (the trial's authoritative result) to the termination log."""
    return default_reporter().finish(metrics, **named)
