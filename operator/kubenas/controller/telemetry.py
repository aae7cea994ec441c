"""The operator's own Prometheus metrics, served over HTTP on ``--metrics-port``.

Experiment and trial counts by phase are what the last reconcile of each experiment saw,
summed at scrape time: no API call and no per-experiment series. Each operator run has its
own registry, so a restart inside one process (the tests) registers nothing twice.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Callable, Hashable, Iterable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kubenas import api

log = logging.getLogger(__name__)

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Telemetry:
    """Every operator metric, on a registry of its own.

    Args:
        suggester_cache_size: returns how many Suggesters the cache holds (read at scrape time).
        watchers_ended: returns how many kopf watch streams have ended for good (read at scrape time).
        experiments_failing: returns how many experiments' reconciles keep failing (read at scrape time).
    """

    def __init__(
        self,
        suggester_cache_size: Callable[[], int] = lambda: 0,
        watchers_ended: Callable[[], int] = lambda: 0,
        experiments_failing: Callable[[], int] = lambda: 0,
    ) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # RSS, CPU seconds, start time (restarts), open fds
        self.reconciles = Counter(
            "kubenas_reconcile", "Experiment reconciles by result", ["result"], registry=self.registry
        )
        self.reconcile_seconds = Histogram(
            "kubenas_reconcile_seconds",
            "Duration of one experiment reconcile",
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.api_errors = Counter(
            "kubenas_api_errors",
            "Failed Kubernetes API requests of the operator, by HTTP status (or 'network')",
            ["code"],
            registry=self.registry,
        )
        cache = Gauge("kubenas_suggester_cache_size", "Suggesters held in memory", registry=self.registry)
        cache.set_function(lambda: float(suggester_cache_size()))
        ended = Gauge(
            "kubenas_watch_streams_ended",
            "kopf watch streams that ended for good (the liveness probe fails while this is above 0)",
            registry=self.registry,
        )
        ended.set_function(lambda: float(watchers_ended()))
        failing = Gauge(
            "kubenas_experiments_failing",
            "Experiments whose reconcile failed twice or more in a row (shown as condition Synced=False)",
            registry=self.registry,
        )
        failing.set_function(lambda: float(experiments_failing()))
        self._seen: dict[Hashable, tuple[str, Tally[str]]] = {}
        self.registry.register(_PhaseCollector(self._seen))

    def observe(self, key: Hashable, phase: str, trial_phases: Iterable[str]) -> None:
        """Record what a reconcile of experiment ``key`` saw."""
        self._seen[key] = (phase, Tally(trial_phases))

    def forget(self, key: Hashable) -> None:
        """The experiment is gone: its trials no longer count."""
        self._seen.pop(key, None)

    def reconciled(self, result: str, seconds: float) -> None:
        self.reconciles.labels(result).inc()
        self.reconcile_seconds.observe(seconds)

    def api_error(self, code: int | str) -> None:
        self.api_errors.labels(str(code)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _PhaseCollector(Collector):
    def __init__(self, seen: dict[Hashable, tuple[str, Tally[str]]]) -> None:
        self._seen = seen

    def collect(self) -> Iterator[Metric]:
        experiments: Tally[str] = Tally()
        trials: Tally[str] = Tally()
        for phase, trial_phases in list(self._seen.values()):
            experiments[phase] += 1
            trials.update(trial_phases)
        family = GaugeMetricFamily("kubenas_experiments", "Experiments by phase", labels=["phase"])
        for phase in api.ExperimentPhase:
            family.add_metric([phase.value], experiments[phase.value])
        yield family
        family = GaugeMetricFamily("kubenas_trials", "Trials by phase", labels=["phase"])
        for phase in api.TrialPhase:
            family.add_metric([phase.value], trials[phase.value])
        yield family


async def serve(telemetry: Telemetry, host: str, port: int) -> web.AppRunner:
    """Serve ``/metrics`` on ``host:port`` from this event loop; stop it with ``runner.cleanup()``."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=telemetry.exposition(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("serving operator metrics on http://%s:%d/metrics", host, port)
    return runner
