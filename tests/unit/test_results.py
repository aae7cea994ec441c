"""Termination-message parsing and finished-trial classification (kubenas.results)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import pytest
from kubenas import api, results

SINGLE = api.Objective(metric="accuracy", goal=api.Goal.MAXIMIZE)
PARETO = api.Objective(
    metrics=[
        api.ObjectiveMetric(name="accuracy", goal=api.Goal.MAXIMIZE),
        api.ObjectiveMetric(name="latency_ms", goal=api.Goal.MINIMIZE),
    ],
    strategy=api.Strategy.PARETO,
)


@pytest.mark.parametrize(
    ("text", "metrics"),
    [
        pytest.param('{"accuracy": 0.97}', {"accuracy": 0.97}, id="float"),
        pytest.param('{"params": 12000}', {"params": 12000.0}, id="int-becomes-float"),
        pytest.param(b'{"loss": -1.5e-3}', {"loss": -1.5e-3}, id="bytes"),
        pytest.param('  {"a": 1, "b": 2}\n', {"a": 1.0, "b": 2.0}, id="surrounding-whitespace"),
        pytest.param("", {}, id="empty"),
        pytest.param(None, {}, id="missing"),
        pytest.param("{}", {}, id="empty-object"),
    ],
)
def test_valid_results_parse(text: str | bytes | None, metrics: dict[str, float]) -> None:
    parsed = results.parse_termination_message(text)
    assert parsed.ok, parsed.error
    assert dict(parsed.metrics) == metrics
    assert all(type(v) is float for v in parsed.metrics.values())


@pytest.mark.parametrize(
    ("text", "words"),
    [
        pytest.param("accuracy=0.9", "not valid JSON", id="not-json"),
        pytest.param('{"accuracy": 0.9', "not valid JSON", id="truncated-json"),
        pytest.param("[0.9]", "got a JSON array", id="array"),
        pytest.param("0.9", "got a JSON number", id="bare-number"),
        pytest.param('"ok"', "got a JSON string", id="bare-string"),
        pytest.param("null", "got a JSON null", id="null"),
        pytest.param('{"accuracy": true}', "'accuracy' is a JSON boolean", id="bool-rejected"),
        pytest.param('{"accuracy": "0.9"}', "'accuracy' is a JSON string", id="string-value"),
        pytest.param('{"accuracy": null}', "'accuracy' is a JSON null", id="null-value"),
        pytest.param('{"accuracy": {"top1": 0.9}}', "'accuracy' is a JSON object", id="nested-object"),
        pytest.param('{"accuracy": [0.9]}', "'accuracy' is a JSON array", id="nested-array"),
        pytest.param('{"accuracy": NaN}', "NaN", id="nan"),
        pytest.param('{"accuracy": Infinity}', "Infinity", id="infinity"),
        pytest.param('{"accuracy": -Infinity}', "-Infinity", id="minus-infinity"),
        pytest.param('{"accuracy": 1e999}', "not finite", id="float-overflow"),
        pytest.param('{"accuracy": 1' + "0" * 400 + "}", "too large", id="huge-int"),
        pytest.param('{"a": 1, "a": 2}', "appears twice", id="duplicate-key"),
        pytest.param('{"": 1}', "must be 1 to", id="empty-name"),
        pytest.param("{" + '"' + "m" * 200 + '": 1}', "must be 1 to", id="long-name"),
        pytest.param('{"\\ud800": 2}', "metric name '\\ud800' holds a lone surrogate", id="lone-surrogate-name"),
        pytest.param("[" * 2000 + "]" * 2000, "nested too deeply", id="deeply-nested"),
        pytest.param('{"a": {"b": 1}}', "'a' is a JSON object", id="nested-object"),
        pytest.param('{"a":' * 500 + "1" + "}" * 500, "nested too deeply", id="deeply-nested-objects"),
        pytest.param(b"\xff\xfe{}", "not UTF-8", id="binary"),
        pytest.param('{"accuracy": 0.9, "pad": "' + "x" * 5000 + '"}', "larger than 4096", id="oversized"),
        pytest.param(b"{" + b" " * 10_000_000 + b"}", "larger than 4096", id="oversized-10MB"),
    ],
)
def test_garbage_is_refused_with_a_message(text: str | bytes, words: str) -> None:
    parsed = results.parse_termination_message(text)
    assert not parsed.ok
    assert dict(parsed.metrics) == {}
    assert words in (parsed.error or "")


def test_exactly_4096_bytes_is_accepted() -> None:
    body = '{"accuracy": 0.5, "p": 1}'
    text = body[:-1] + " " * (4096 - len(body)) + "}"
    assert len(text.encode()) == 4096
    assert results.parse_termination_message(text).ok


def test_multibyte_text_counts_bytes_not_characters() -> None:
    text = '{"accuracy": 0.5}' + " " * 4000 + "é" * 60  # 4077 characters, 4137 bytes
    assert "larger than 4096" in (results.parse_termination_message(text).error or "")


C = api.TrialPhase
R = api.TrialReason


@pytest.mark.parametrize(
    ("objective", "exit_code", "text", "backend", "phase", "reason", "words"),
    [
        pytest.param(SINGLE, 0, '{"accuracy": 0.9}', None, C.SUCCEEDED, R.COMPLETED, "completed", id="succeeded"),
        pytest.param(
            PARETO, 0, '{"accuracy": 0.9, "latency_ms": 3}', None, C.SUCCEEDED, R.COMPLETED, "", id="pareto-succeeded"
        ),
        pytest.param(SINGLE, 1, '{"accuracy": 0.9}', None, C.FAILED, R.EXIT_CODE, "exit code 1", id="exit-1"),
        pytest.param(SINGLE, 137, "", None, C.FAILED, R.EXIT_CODE, "exit code 137 (killed by signal 9 SIGKILL)",
                     id="exit-137"),
        pytest.param(SINGLE, -15, "", None, C.FAILED, R.EXIT_CODE, "signal 15 SIGTERM", id="local-signal"),
        pytest.param(SINGLE, None, "", None, C.FAILED, R.EXIT_CODE, "without an exit code", id="no-exit-code"),
        pytest.param(SINGLE, 0, "", None, C.FAILED, R.METRICS_MISSING, "'accuracy' missing", id="no-result"),
        pytest.param(SINGLE, 0, '{"loss": 0.1}', None, C.FAILED, R.METRICS_MISSING, "reported: loss",
                     id="objective-missing"),
        pytest.param(PARETO, 0, '{"accuracy": 0.9}', None, C.FAILED, R.METRICS_MISSING, "'latency_ms'",
                     id="one-of-two-missing"),
        pytest.param(SINGLE, 0, "garbage", None, C.FAILED, R.INVALID_RESULT, "result is not valid JSON",
                     id="garbage"),
        pytest.param(SINGLE, 0, "x" * 5000, None, C.FAILED, R.INVALID_RESULT, "larger than 4096", id="oversized"),
        pytest.param(SINGLE, 137, "", "OOMKilled", C.FAILED, R.OOM_KILLED, "memory limit", id="oom"),
        pytest.param(SINGLE, None, "", "DeadlineExceeded", C.FAILED, R.DEADLINE_EXCEEDED, "deadline",
                     id="deadline"),
        pytest.param(SINGLE, None, None, R.UNSCHEDULABLE, C.FAILED, R.UNSCHEDULABLE, "scheduled",
                     id="unschedulable"),
        pytest.param(SINGLE, None, None, "ImagePullBackOff", C.FAILED, R.IMAGE_PULL, "pulled", id="image-pull"),
        pytest.param(SINGLE, 0, '{"accuracy": 0.9}', "DeadlineExceeded", C.FAILED, R.DEADLINE_EXCEEDED, "",
                     id="backend-reason-wins-over-success"),
    ],
)
def test_classify_finished_trial(
    objective: api.Objective,
    exit_code: int | None,
    text: str | None,
    backend: str | None,
    phase: api.TrialPhase,
    reason: api.TrialReason,
    words: str,
) -> None:
    outcome = results.classify_finished_trial(objective, exit_code=exit_code, result_text=text, backend_reason=backend)
    assert (outcome.phase, outcome.reason) == (phase, reason)
    assert words in outcome.message
    assert len(outcome.message) <= 1024


def test_success_carries_the_metrics() -> None:
    outcome = results.classify_finished_trial(SINGLE, exit_code=0, result_text='{"accuracy": 0.9, "params": 7}')
    assert dict(outcome.metrics) == {"accuracy": 0.9, "params": 7.0}


def test_failed_exit_keeps_a_valid_partial_result_for_debugging() -> None:
    outcome = results.classify_finished_trial(SINGLE, exit_code=2, result_text='{"accuracy": 0.4}')
    assert dict(outcome.metrics) == {"accuracy": 0.4}


def test_constraint_violation_is_still_a_success() -> None:
    constrained = SINGLE.model_copy(update={"constraints": [api.Constraint(metric="params", max=100)]})
    outcome = results.classify_finished_trial(constrained, exit_code=0, result_text='{"accuracy": 0.9, "params": 1e6}')
    assert (outcome.phase, outcome.reason) == (C.SUCCEEDED, R.COMPLETED)


def test_backend_message_is_used_when_given() -> None:
    outcome = results.classify_finished_trial(
        SINGLE,
        exit_code=None,
        result_text=None,
        backend_reason="Unschedulable",
        backend_message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    )
    assert outcome.message == "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."


def test_a_failure_of_a_multi_pod_trial_names_its_rank() -> None:
    failed = results.classify_finished_trial(SINGLE, exit_code=3, result_text="ValueError: bad shard", rank=1)
    assert (failed.reason, failed.message) == (R.EXIT_CODE, "rank 1: exit code 3: ValueError: bad shard")
    oom = results.classify_finished_trial(SINGLE, exit_code=137, result_text="", backend_reason="OOMKilled", rank=2)
    assert oom.reason == R.OOM_KILLED and oom.message.startswith("rank 2: ")
    succeeded = results.classify_finished_trial(SINGLE, exit_code=0, result_text='{"accuracy": 0.9}', rank=0)
    assert succeeded.message == "completed"


@pytest.mark.parametrize("reason", ["Completed", "EarlyStopped"])
def test_non_backend_reason_is_a_programming_error(reason: str) -> None:
    with pytest.raises(ValueError, match="backend_reason"):
        results.classify_finished_trial(SINGLE, exit_code=0, result_text="", backend_reason=reason)



def test_nesting_is_refused_whatever_the_recursion_limit() -> None:
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)  # as some libraries do; json's own depth check follows it
    try:
        parsed = results.parse_termination_message("[" * 2000 + "]" * 2000)
    finally:
        sys.setrecursionlimit(previous)
    assert parsed.error == "result is nested too deeply"


def test_a_sample_adds_a_curve_point_only_for_a_new_step() -> None:
    status = api.TrialStatus(phase=api.TrialPhase.RUNNING)
    first = results.with_sample(status, 1, {"acc": 0.5}, "acc", frozenset())
    assert [(p.step, p.value) for p in first.curve] == [(1, 0.5)] and first.step == 1
    assert results.with_sample(first, 1, {"acc": 0.9}, "acc", frozenset()) is first  # nothing new
    assert results.with_sample(first, 2, {"loss": 0.1}, "acc", frozenset()).curve == first.curve


def test_a_replaced_pod_continues_one_curve_without_going_back() -> None:
    status = api.TrialStatus(phase=api.TrialPhase.RUNNING)
    for step in (1, 2, 3):
        status = results.with_sample(status, step, {"acc": step / 10}, "acc", frozenset())
    # the new pod's trainer reports the checkpointed step again, or (without a checkpoint) starts over
    assert results.with_sample(status, 3, {"acc": 0.9}, "acc", frozenset()) is status
    assert results.with_sample(status, 1, {"acc": 0.9}, "acc", frozenset()) is status
    resumed = results.with_sample(status, 4, {"acc": 0.4}, "acc", frozenset())
    assert [p.step for p in resumed.curve] == [1, 2, 3, 4] and resumed.step == 4


def test_a_sample_records_the_final_step_the_trial_announced() -> None:
    status = results.with_sample(api.TrialStatus(), 0, {}, "acc", frozenset(), final_step=12)
    assert (status.step, status.final_step) == (0, 12)
    assert results.with_sample(status, 1, {}, "acc", frozenset()).final_step == 12  # kept when not re-read


def test_a_long_curve_thins_its_older_half() -> None:
    status = api.TrialStatus(curve=[api.CurvePoint(step=s, value=s) for s in range(1, api.MAX_CURVE_POINTS + 1)])
    thinned = results.with_sample(status, api.MAX_CURVE_POINTS + 1, {"acc": 1.0}, "acc", frozenset())
    assert len(thinned.curve) <= api.MAX_CURVE_POINTS and thinned.curve[-1].step == api.MAX_CURVE_POINTS + 1
    steps = [p.step for p in thinned.curve]
    assert steps == sorted(steps) and steps[0] == 1


def test_a_sample_keeps_the_latest_watched_values_only() -> None:
    status = api.TrialStatus(reported={"params": 10.0})
    new = results.with_sample(status, 0, {"params": 12.0, "flops": 3.0, "acc": 0.1}, "acc", frozenset({"params"}))
    assert new.reported == {"params": 12.0}


T0 = datetime(2025, 1, 1, tzinfo=UTC)


def test_each_disruption_counts_once_even_when_seen_again() -> None:
    status = api.TrialStatus(phase=api.TrialPhase.RUNNING)
    once = results.with_disruptions(status, [T0, T0 + timedelta(seconds=5)])
    assert (once.disruptions, once.last_disruption_time) == (2, T0 + timedelta(seconds=5))
    # the next reconcile lists the same pods (or none: they were deleted), then a new one is disrupted
    assert results.with_disruptions(once, [T0, T0 + timedelta(seconds=5)]) is once
    assert results.with_disruptions(once, []) is once
    later = results.with_disruptions(once, [T0, T0 + timedelta(seconds=5), T0 + timedelta(minutes=1)])
    assert (later.disruptions, later.last_disruption_time) == (3, T0 + timedelta(minutes=1))
    assert later.phase == api.TrialPhase.RUNNING


def test_a_trial_suspended_again_after_it_ran_is_requeued_not_failed() -> None:
    curve = [api.CurvePoint(step=1, value=0.5)]
    running = api.TrialStatus(phase=api.TrialPhase.RUNNING, start_time=T0, curve=curve)
    queued = results.requeued(running, "waiting for queue q to admit the Job")
    assert (queued.phase, queued.requeues, queued.message) == (
        api.TrialPhase.QUEUED, 1, "waiting for queue q to admit the Job"
    )
    assert (queued.start_time, queued.curve) == (T0, curve)  # it resumes where it was
    assert results.requeued(queued, "still waiting").requeues == 1  # still the same wait
    resumed = queued.model_copy(update={"phase": api.TrialPhase.RUNNING})
    assert results.requeued(resumed, None).requeues == 2


def test_a_trial_waiting_for_its_first_admission_is_not_a_requeue() -> None:
    waiting = results.requeued(api.TrialStatus(), "waiting for queue q to admit the Job")
    assert waiting.phase == api.TrialPhase.QUEUED and not waiting.requeues


def test_an_exit_code_failure_names_the_last_log_line() -> None:
    obj = api.Objective(metric="acc", goal="maximize")
    given = results.classify_finished_trial(obj, exit_code=1, result_text=None, log_tail="ValueError: bad lr")
    assert given.message.endswith(": ValueError: bad lr")
    # Kubernetes's FallbackToLogsOnError: the termination message is the log's tail.
    fallback = results.classify_finished_trial(obj, exit_code=1, result_text="epoch 1\nRuntimeError: CUDA OOM\n\n")
    assert fallback.message.endswith(": RuntimeError: CUDA OOM")
    result = results.classify_finished_trial(obj, exit_code=1, result_text='{"acc": 0.5}')
    assert result.message == results.describe_exit_code(1)  # a valid result is not a log


def test_latency_noisy_flags_latency_ms() -> None:
    obj = api.Objective(metric="accuracy", goal="maximize")
    text = '{"accuracy": 0.9, "latency_ms": 176.0, "latency_noisy": 1}'
    outcome = results.classify_finished_trial(obj, exit_code=0, result_text=text)
    assert outcome.phase == api.TrialPhase.SUCCEEDED
    assert outcome.noisy_metrics == ["latency_ms"]


@pytest.mark.parametrize("metrics", [{"latency_ms": 1.0, "latency_noisy": 0.0}, {"latency_ms": 1.0},
                                     {"latency_noisy": 1.0}])
def test_no_noisy_metric_without_a_raised_flag_and_the_metric(metrics: dict[str, float]) -> None:
    assert results.noisy_metrics(metrics) == []
