"""The early-stopping replay (benchmarks/early_stopping.py): its bookkeeping, not its figures."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("early_stopping_bench", BENCH / "early_stopping.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def hand_made(bench):
    # A steady, B a late bloomer (the best final), C good from the start.
    return [
        bench.Run((0.5, 0.6, 0.7), 0.7),
        bench.Run((0.4, 0.45, 0.9), 0.9),
        bench.Run((0.6, 0.7, 0.8), 0.8),
    ]


def test_no_rule_trains_everything(bench):
    out = bench.replay(hand_made(bench), [0, 1, 2], bench.make_rule("none"), parallel=2)
    assert (out.epochs, out.full_epochs) == (9, 9)
    assert out.saved == 0.0
    assert out.regret_pp == 0.0


def test_asha_one_at_a_time(bench):
    # A runs alone to the end; B is worse than A at rung 1 (top 1 of 2) and stops after one
    # epoch; C beats A at rungs 1 and 2 and finishes. 7 of 9 epochs, best kept 0.8 vs 0.9.
    rule = bench.make_rule("asha", min_epochs=1, reduction_factor=2)
    out = bench.replay(hand_made(bench), [0, 1, 2], rule, parallel=1)
    assert (out.epochs, out.full_epochs) == (7, 9)
    assert out.saved == pytest.approx(2 / 9)
    assert out.regret_pp == pytest.approx(10.0)


def test_asha_in_parallel(bench):
    # All three start together; after epoch 1 only C (0.6) is in the top 1 of 3: A and B stop.
    rule = bench.make_rule("asha", min_epochs=1, reduction_factor=2)
    out = bench.replay(hand_made(bench), [0, 1, 2], rule, parallel=3)
    assert out.epochs == 5
    assert out.saved == pytest.approx(4 / 9)
    assert out.regret_pp == pytest.approx(10.0)


def test_median_needs_finished_trials(bench):
    # Order A, C, B one at a time: C is above A's running averages; B's best 0.4 at step 1 is
    # below the median 0.55 of A and C, so it stops. With minTrials 3 nothing ever stops.
    runs = hand_made(bench)
    out = bench.replay(runs, [0, 2, 1], bench.make_rule("median", min_epochs=1, min_trials=1), parallel=1)
    assert (out.epochs, out.saved, out.regret_pp) == (7, pytest.approx(2 / 9), pytest.approx(10.0))
    out = bench.replay(runs, [0, 2, 1], bench.make_rule("median", min_epochs=1, min_trials=3), parallel=1)
    assert (out.epochs, out.regret_pp) == (9, 0.0)


def test_summary_and_committed_curves(bench):
    runs = bench.load_runs(BENCH / "data" / "fashion_mnist_curves.jsonl")[:8]
    assert len(runs) == 8
    assert all(len(r.curve) >= 2 and 0.0 < r.final <= 1.0 for r in runs)
    grid = bench.settings([1], [3], [3])
    summaries = bench.evaluate(runs, grid, seeds=3, parallel=4)
    none, *rules = summaries
    assert (none.saved, none.regret_mean, none.regret_zero) == (0.0, 0.0, 1.0)
    for s in rules:
        assert 0.0 <= s.saved < 1.0
        assert s.regret_mean >= 0.0 and math.isfinite(s.regret_p90)
    assert "| none | 0.0% |" in bench.table(summaries)


def test_summarise(bench):
    outs = [bench.Outcome(epochs=6, full_epochs=12, best=0.9, best_kept=0.9 - d) for d in (0.0, 0.002, 0.004)]
    s = bench.summarise("x", outs)
    assert s.saved == pytest.approx(0.5)
    assert s.regret_mean == pytest.approx(0.2)
    assert s.regret_median == pytest.approx(0.2)
    assert s.regret_zero == pytest.approx(1 / 3)
    assert s.meets(0.5, 0.2 + 1e-9) and not s.meets(0.6, 1.0)
