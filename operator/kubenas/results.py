"""What a trial reports: its samples while it runs, and its result once it has finished.

A running trial's samples fold into its status (``with_sample``); a finished trial's
termination message is parsed and the trial classified. Both backends call this module.
The operator reads the pod's termination message and container state; the local runner
reads the termination file and the process's exit status. Everything read from a trial is
bounded and checked here, so a trial that writes garbage fails with ``InvalidResult``
instead of reaching the optimizer or the status. How a disrupted pod or a Job suspended again
(``with_disruptions``, ``requeued``) changes a trial's status is decided here too.
"""

from __future__ import annotations

import json
import math
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubenas import api, objective

MAX_RESULT_BYTES = 4096
"""The largest termination message accepted (Kubernetes keeps at most 4096 bytes of it)."""

MAX_METRIC_NAME_LENGTH = 128

BACKEND_REASONS = frozenset(
    {
        api.TrialReason.OOM_KILLED,
        api.TrialReason.DEADLINE_EXCEEDED,
        api.TrialReason.UNSCHEDULABLE,
        api.TrialReason.IMAGE_PULL,
    }
)
"""Reasons only the backend can observe; they win over the exit code and the result."""

_BACKEND_DEFAULT_MESSAGES = {
    api.TrialReason.OOM_KILLED: "the trial's container was killed for exceeding its memory limit",
    api.TrialReason.DEADLINE_EXCEEDED: "the trial ran past its deadline (activeDeadlineSeconds) and was ended",
    api.TrialReason.UNSCHEDULABLE: "the trial's pod could not be scheduled on any node",
    api.TrialReason.IMAGE_PULL: "the trial's container image could not be pulled",
}


NOISY_FLAGS = {"latency_noisy": "latency_ms"}
"""Result keys by which a trial flags one of its metrics as unreliable (flag >= 0.5), and that metric.

The trial image sets ``latency_noisy`` to 1 when every round of its latency measurement was
disturbed by other processes (docs/trial.md).
"""


def noisy_metrics(metrics: Mapping[str, float]) -> list[str]:
    """The metrics of a result that the trial itself flagged as unreliable, in ``NOISY_FLAGS`` order."""
    return [name for flag, name in NOISY_FLAGS.items() if metrics.get(flag, 0.0) >= 0.5 and name in metrics]


MEASURED_METRICS = ("latency_ms", "latency_ms_spread", "latency_remeasured", "latency_noisy", "latency_threads")
"""What a latency measurement after the trial (``python -m kubenas_trial.measure``) reports and replaces."""
TRIAL_LATENCY = "latency_ms_trial"
"""Where the trial's own ``latency_ms`` is kept once a later measurement replaces it."""


REPRODUCED_WITHIN = 1.5
"""Two latency medians of one model within this ratio of each other reproduce a value (trusted)."""


def with_measurement(
    status: api.TrialStatus, result_text: str | bytes | None, *, replace: bool = False
) -> api.TrialStatus:
    """``status`` after one more latency measurement whose result (termination message) is ``result_text``.

    Interference only makes a forward look slower (the trial image times CPU time), so every
    median is an upper bound and the least disturbed one is kept: the new result's latency
    metrics replace the current ones when its ``latency_ms`` is lower (or when ``replace``: the
    first measurement on a deployment target, ``remeasure: Always``). The value is trusted (not
    noisy) when the new round was quiet or when the new and the kept medians agree within
    ``REPRODUCED_WITHIN``: a disturbance large enough to matter does not repeat itself to within
    that. The trial's own value stays as ``latency_ms_trial``. A missing or invalid result only
    counts the attempt; either way ``costMeasurements`` goes up by one.
    """
    attempts = (status.cost_measurements or 0) + 1
    parsed = parse_termination_message(result_text)
    if not parsed.ok or "latency_ms" not in parsed.metrics:
        return status.model_copy(update={"cost_measurements": attempts})
    metrics = dict(status.metrics)
    kept = None if replace else metrics.get("latency_ms")
    new = parsed.metrics["latency_ms"]
    if TRIAL_LATENCY not in metrics and "latency_ms" in metrics:
        metrics[TRIAL_LATENCY] = metrics["latency_ms"]
    quiet = parsed.metrics.get("latency_noisy", 0.0) < 0.5
    reproduced = kept is not None and max(new, kept) <= REPRODUCED_WITHIN * min(new, kept)
    if kept is None or new < kept:
        metrics.update({name: parsed.metrics[name] for name in MEASURED_METRICS if name in parsed.metrics})
        trusted = quiet or reproduced
    else:
        trusted = reproduced or "latency_ms" not in noisy_metrics(metrics)
    metrics["latency_noisy"] = 0.0 if trusted else 1.0
    return status.model_copy(
        update={"metrics": metrics, "noisy_metrics": noisy_metrics(metrics), "cost_measurements": attempts}
    )


def measured_status(
    policy: api.CostMeasurement, trial: api.Trial, result_text: str | bytes | None
) -> api.TrialStatus:
    """``trial``'s status after a latency measurement (:func:`with_measurement`); the first one on a
    deployment target (``remeasure: Always``) replaces the trial's own value."""
    replace = objective.awaits_first_measurement(policy, trial)
    return with_measurement(trial.status, result_text, replace=replace)


class InvalidResultError(ValueError):
    """A termination message that is not a bounded JSON object of finite numbers."""


@dataclass(frozen=True)
class ResultParse:
    """The outcome of parsing a termination message.

    Attributes:
        metrics: the reported metrics (empty when the message was empty or invalid).
        error: why the message is invalid, or None when it is valid (an empty message is valid).
    """

    metrics: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class TrialOutcome:
    """How a finished trial ended: what the backend writes into the Trial's status.

    Attributes:
        phase: ``Succeeded`` or ``Failed``.
        reason: why (``Completed`` for a success).
        metrics: final metrics; kept on failures too when the result parsed, for debugging.
        message: one human-readable line; names the exit code or the missing metric.
        noisy_metrics: metrics the trial flagged as unreliable (``noisy_metrics``); the
            Trial's ``status.noisyMetrics``.
    """

    phase: api.TrialPhase
    reason: api.TrialReason
    metrics: Mapping[str, float]
    message: str
    noisy_metrics: list[str] = field(default_factory=list)


def parse_termination_message(text: str | bytes | None) -> ResultParse:
    """Parse a trial's final result, never raising for bad input.

    The message must be one JSON object (at most ``MAX_RESULT_BYTES`` UTF-8 bytes) whose
    values are finite numbers; booleans, strings, null and nested values are refused with
    a message naming the key. Integers are returned as floats. An empty or missing
    message parses to no metrics without an error.

    Example:
        >>> parse_termination_message('{"accuracy": 0.97, "params": 12000}').metrics
        {'accuracy': 0.97, 'params': 12000.0}
    """
    try:
        return ResultParse(metrics=_parse(text))
    except InvalidResultError as err:
        return ResultParse(error=str(err))


MAX_NESTING = 32


def _parse(text: str | bytes | None) -> dict[str, float]:
    if text is None:
        return {}
    head = text[: MAX_RESULT_BYTES + 1]  # a longer message is refused whatever it holds
    raw = head.encode("utf-8", errors="surrogatepass") if isinstance(head, str) else bytes(head)
    if len(raw) > MAX_RESULT_BYTES:
        raise InvalidResultError(f"result is larger than {MAX_RESULT_BYTES} bytes")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidResultError(f"result is not UTF-8 text (byte {err.start})") from None
    if not decoded.strip():
        return {}
    if _nesting_depth(decoded) > MAX_NESTING:
        # Checked up front: json's own limit follows sys.getrecursionlimit(), which libraries change.
        raise InvalidResultError("result is nested too deeply")
    try:
        document = json.loads(decoded, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except InvalidResultError:
        raise
    except RecursionError:
        raise InvalidResultError("result is nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, and ints beyond Python's digit limit
        raise InvalidResultError(f"result is not valid JSON: {_first_line(err)}") from None
    if not isinstance(document, dict):
        raise InvalidResultError(f"result must be a JSON object of metrics, got a JSON {_json_type(document)}")
    return {name: _metric_value(name, value) for name, value in document.items()}


def _nesting_depth(text: str) -> int:
    """The deepest bracket nesting in JSON ``text``, ignoring brackets inside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise InvalidResultError(f"result contains {name}; metrics must be finite numbers")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise InvalidResultError(f"metric {_shorten(key)!r} appears twice in the result")
        document[key] = value
    return document


def _metric_value(name: str, value: Any) -> float:
    if not name or len(name) > MAX_METRIC_NAME_LENGTH:
        raise InvalidResultError(f"metric name {_shorten(name)!r} must be 1 to {MAX_METRIC_NAME_LENGTH} characters")
    if not is_unicode_text(name):
        raise InvalidResultError(
            f"metric name {_shorten(name)!r} holds a lone surrogate (\\uD800-\\uDFFF); names must be Unicode text"
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidResultError(
            f"metric {_shorten(name)!r} is a JSON {_json_type(value)}; metrics must be finite numbers"
        )
    try:
        number = float(value)
    except OverflowError:
        raise InvalidResultError(f"metric {_shorten(name)!r} is too large to be a number") from None
    if not math.isfinite(number):
        raise InvalidResultError(f"metric {_shorten(name)!r} is not finite")
    return number


def is_unicode_text(text: str) -> bool:
    """False for a string holding lone surrogates: JSON's ``\\ud800`` escapes make them, UTF-8 cannot encode them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    return "number"


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def with_sample(
    status: api.TrialStatus,
    step: int,
    metrics: Mapping[str, float],
    curve_metric: str | None,
    watched: frozenset[str],
    final_step: int | None = None,
) -> api.TrialStatus:
    """``status`` with one intermediate report folded in; the same object when nothing changed.

    The step, and the final step the trial announced, if any; a point of ``curve_metric``'s
    learning curve when the step is new (bounded: past ``api.MAX_CURVE_POINTS`` the older half
    is thinned, which keeps "the value at or before a step" sound for the early-stopping rules);
    and the latest values of the ``watched`` metrics (those under a ``stopEarly`` constraint).
    Steps only move forward: a trial whose pod was replaced continues one curve (a resumed
    trainer reports the steps after its checkpoint; steps it reports again are not new).
    """
    update: dict[str, Any] = {}
    if status.step is None or step > status.step:
        update["step"] = step
    if final_step is not None and final_step != status.final_step:
        update["final_step"] = final_step
    value = metrics.get(curve_metric) if curve_metric else None
    curve = status.curve
    if value is not None and (not curve or step > curve[-1].step):
        curve = [*curve, api.CurvePoint(step=step, value=value)]
        if len(curve) > api.MAX_CURVE_POINTS:
            half = len(curve) // 2
            curve = curve[:half:2] + curve[half:]
        update["curve"] = curve
    reported = {k: v for k, v in metrics.items() if k in watched}
    if any(status.reported.get(k) != v for k, v in reported.items()):
        update["reported"] = {**status.reported, **reported}
    return status.model_copy(update=update) if update else status


def with_disruptions(status: api.TrialStatus, times: Iterable[datetime]) -> api.TrialStatus:
    """``status`` counting the disruptions of the trial's pods (when each was marked) not counted yet.

    ``lastDisruptionTime`` remembers the newest one counted, so each counts once, also once its
    pod is gone; the same object when there is none.
    """
    since = status.last_disruption_time
    new = [t for t in times if since is None or t > since]
    if not new:
        return status
    return status.model_copy(
        update={"disruptions": (status.disruptions or 0) + len(new), "last_disruption_time": max(new)}
    )


def requeued(status: api.TrialStatus, message: str | None) -> api.TrialStatus:
    """``status`` when the trial's Job waits for its queue: ``Queued``, with the backend's ``message``.

    A trial that had started and is suspended again (Kueue preemption) counts one more
    ``requeues``; that is not a failure, so its curve and start time are kept.
    """
    again = status.phase != api.TrialPhase.QUEUED and status.start_time is not None
    requeues = (status.requeues or 0) + 1 if again else status.requeues
    return status.model_copy(update={"phase": api.TrialPhase.QUEUED, "message": message, "requeues": requeues})


def classify_finished_trial(
    objective: api.Objective,
    *,
    exit_code: int | None,
    result_text: str | bytes | None,
    backend_reason: api.TrialReason | str | None = None,
    backend_message: str | None = None,
    log_tail: str | None = None,
    rank: int | None = None,
) -> TrialOutcome:
    """Decide a finished trial's phase, reason, metrics and message.

    Precedence: a backend reason (OOMKilled, DeadlineExceeded, Unschedulable,
    ImagePullBackOff) wins; then a non-zero or unknown exit code (``ExitCode``); then an
    invalid result (``InvalidResult``); then a missing objective metric
    (``MetricsMissing``); otherwise ``Succeeded``/``Completed``. Constraint violations are
    still ``Succeeded``: feasibility is the objective's business.

    Args:
        objective: the experiment's objective (its metric names must be in the result).
        exit_code: the container's exit code; negative for a process killed by a signal
            (the local runner's convention); None when unknown.
        result_text: the termination message or file, as read (bounded here).
        backend_reason: what the backend observed, e.g. ``"OOMKilled"``.
        backend_message: the backend's detail for that reason (e.g. the scheduler's message).
        log_tail: the last line of the trial's log, appended to an ``ExitCode`` message (it
            usually names the error). When None and ``result_text`` is not a result, its last
            line is used: Kubernetes's ``FallbackToLogsOnError`` puts the log's tail there.
        rank: the pod or process of a multi-pod trial that ended it (its exit code, result text
            and log); a failure's message then starts with ``rank N:``.

    Raises:
        ValueError: ``backend_reason`` is not one of the backend reasons.
    """
    outcome = _classify(objective, exit_code, result_text, backend_reason, backend_message, log_tail)
    if rank is None or outcome.phase != api.TrialPhase.FAILED:
        return outcome
    return _failed(outcome.reason, outcome.metrics, f"rank {rank}: {outcome.message}")


def _classify(
    objective: api.Objective,
    exit_code: int | None,
    result_text: str | bytes | None,
    backend_reason: api.TrialReason | str | None,
    backend_message: str | None,
    log_tail: str | None,
) -> TrialOutcome:
    parsed = parse_termination_message(result_text)
    metrics = dict(parsed.metrics)
    if backend_reason is not None:
        reason = api.TrialReason(backend_reason)
        if reason not in BACKEND_REASONS:
            raise ValueError(f"backend_reason {str(backend_reason)!r} is not one of {sorted(BACKEND_REASONS)}")
        message = backend_message or _BACKEND_DEFAULT_MESSAGES[reason]
        return _failed(reason, metrics, message)
    if exit_code != 0:
        if log_tail is None and not parsed.ok:
            text = result_text.decode("utf-8", "replace") if isinstance(result_text, bytes) else result_text or ""
            log_tail = next((line.strip()[:400] for line in reversed(text.splitlines()) if line.strip()), None)
        message = describe_exit_code(exit_code)
        return _failed(api.TrialReason.EXIT_CODE, metrics, f"{message}: {log_tail}" if log_tail else message)
    if not parsed.ok:
        return _failed(api.TrialReason.INVALID_RESULT, {}, parsed.error or "invalid result")
    missing = [m.name for m in objective.objective_metrics() if m.name not in metrics]
    if missing:
        reported = ", ".join(sorted(metrics)[:10]) or "nothing"
        names = ", ".join(repr(n) for n in missing)
        return _failed(
            api.TrialReason.METRICS_MISSING,
            metrics,
            f"exited 0 but objective metric {names} missing from the result (reported: {reported})",
        )
    return TrialOutcome(api.TrialPhase.SUCCEEDED, api.TrialReason.COMPLETED, metrics, "completed",
                        noisy_metrics(metrics))


def describe_exit_code(exit_code: int | None) -> str:
    """A message naming a failed trial's exit code, with the signal when one is implied."""
    if exit_code is None:
        return "the trial ended without an exit code"
    if exit_code < 0:
        return f"killed by signal {-exit_code}{_signal_name(-exit_code)} (exit code {exit_code})"
    if exit_code > 128:
        return f"exit code {exit_code} (killed by signal {exit_code - 128}{_signal_name(exit_code - 128)})"
    return f"exit code {exit_code}"


def _signal_name(number: int) -> str:
    try:
        return f" {signal.Signals(number).name}"
    except ValueError:
        return ""


def _failed(reason: api.TrialReason, metrics: Mapping[str, float], message: str) -> TrialOutcome:
    return TrialOutcome(api.TrialPhase.FAILED, reason, dict(metrics), message[:1024])
