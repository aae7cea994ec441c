"""The latency measurement's statistics and re-measurement decision, on injected timings."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from kubenas_trial import cost
from torch import nn


def test_summary_is_median_and_interquartile_spread() -> None:
    measured = cost.summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert measured.median_ms == 3.0
    assert measured.spread == pytest.approx((4.0 - 2.0) / 3.0)


def test_a_few_preempted_runs_move_neither_median_nor_spread_much() -> None:
    quiet = cost.summarize([1.0] * 45 + [1.1] * 5)
    preempted = cost.summarize([1.0] * 45 + [1.1] * 2 + [40.0] * 3)
    assert preempted.median_ms == quiet.median_ms == 1.0
    assert not cost.is_noisy(preempted)


def test_a_disturbed_round_is_noisy() -> None:
    assert cost.is_noisy(cost.summarize([1.0] * 20 + [3.0] * 20 + [9.0] * 10))
    assert not cost.is_noisy(cost.summarize([1.0, 1.02, 0.98, 1.01]))


def test_single_timing_has_no_spread() -> None:
    assert cost.summarize([2.5]) == cost.LatencyRound(2.5, 0.0)


def _rounds(*rounds: cost.LatencyRound) -> tuple[Callable[[], cost.LatencyRound], list[int]]:
    calls: list[int] = []
    source = iter(rounds)

    def next_round() -> cost.LatencyRound:
        calls.append(1)
        return next(source)
    return next_round, calls


def test_quiet_first_round_is_kept_without_remeasuring() -> None:
    measure, calls = _rounds(cost.LatencyRound(1.0, 0.05))
    result = cost.settle(measure, threads=2)
    assert result == cost.Latency(1.0, 0.05, remeasured=0, noisy=False, threads=2)
    assert len(calls) == 1


def test_noisy_round_is_remeasured_until_quiet() -> None:
    measure, calls = _rounds(cost.LatencyRound(30.0, 2.0), cost.LatencyRound(1.1, 0.1), cost.LatencyRound(9.0, 0.9))
    result = cost.settle(measure, threads=1)
    assert (result.median_ms, result.remeasured, result.noisy) == (1.1, 1, False)
    assert len(calls) == 2


def test_remeasurement_is_bounded_and_keeps_the_smallest_spread() -> None:
    measure, calls = _rounds(cost.LatencyRound(30.0, 2.0), cost.LatencyRound(5.0, 0.5), cost.LatencyRound(9.0, 0.9),
                             cost.LatencyRound(1.0, 0.0))
    result = cost.settle(measure, threads=1, max_rounds=3)
    assert (result.median_ms, result.spread, result.remeasured, result.noisy) == (5.0, 0.5, 2, True)
    assert len(calls) == 3


def test_metrics_name_every_value() -> None:
    metrics = cost.Latency(1.5, 0.3, remeasured=2, noisy=True, threads=1).metrics()
    assert metrics == {"latency_ms": 1.5, "latency_ms_spread": 0.3, "latency_remeasured": 2,
                       "latency_noisy": 1, "latency_threads": 1}


def test_measurement_pins_threads_and_restores_them() -> None:
    seen: list[int] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return x

    before = torch.get_num_threads()
    result = cost.measure_latency(Probe(), torch.zeros(1, 4), threads=1, repeats=4, warmup=2)
    assert set(seen) == {1} and len(seen) >= 6
    assert torch.get_num_threads() == before
    assert result.threads == 1 and result.median_ms >= 0


def _fake_clock(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    ticks = iter([0, 2_000_000])
    monkeypatch.setattr(cost.time, name, lambda: next(ticks))


def test_one_cpu_thread_is_timed_by_its_cpu_time(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_clock(monkeypatch, "thread_time_ns")  # descheduled moments are not the model's time
    assert cost.forward_timer(nn.Identity(), torch.zeros(1), threads=1)() == 2.0


def test_several_cpu_threads_are_timed_by_the_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_clock(monkeypatch, "perf_counter_ns")
    assert cost.forward_timer(nn.Identity(), torch.zeros(1), threads=2)() == 2.0
