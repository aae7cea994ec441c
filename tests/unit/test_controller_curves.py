"""The curve poller's bookkeeping (kubenas.controller.curves): bounded for trials that vanished."""

from __future__ import annotations

from types import SimpleNamespace

from kubenas.controller import curves
from kubenas.controller.settings import Settings


def test_poll_times_of_vanished_trials_are_forgotten() -> None:
    settings = Settings()
    now = 100_000.0
    horizon = 10 * max(settings.metrics_poll_seconds, settings.resync_seconds)
    last_poll = {f"gone-{i}": now - horizon - 1 for i in range(1100)}
    last_poll |= {f"live-{i}": now - settings.resync_seconds for i in range(10)}
    ctx = SimpleNamespace(last_poll=last_poll, settings=settings)
    curves._forget_stale_polls(ctx, now)  # type: ignore[arg-type]
    assert sorted(ctx.last_poll) == sorted(f"live-{i}" for i in range(10))


def test_a_small_table_is_left_alone() -> None:
    ctx = SimpleNamespace(last_poll={"old": 0.0}, settings=Settings())
    curves._forget_stale_polls(ctx, 1e9)  # type: ignore[arg-type]
    assert ctx.last_poll == {"old": 0.0}
