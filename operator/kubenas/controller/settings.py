"""Operator settings: one small frozen model, read from the environment once, passed explicitly."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from kubenas import podpolicy

TRIAL_POD_POLICY_ENV = "KUBENAS_TRIAL_POD_POLICY"


@dataclass(frozen=True)
class Settings:
    """How the operator behaves; every field has a production default.

    Attributes:
        namespaces: namespaces served; empty means all namespaces.
        prometheus_url: base URL of the Prometheus HTTP API (for ``metrics.source: prometheus``).
        prometheus_trial_label: the series label that names a trial's pod in Prometheus.
        resync_seconds: how often running experiments are reconciled without any event
            (deadlines, unschedulable pods, metrics polling).
        metrics_poll_seconds: the shortest interval between two metric reads of one trial.
        unschedulable_seconds: how long a pod may stay unschedulable before its trial fails.
        debounce_seconds: events of one experiment arriving within this window reconcile once.
        retry_seconds: delay before a reconcile that failed (API error) is retried.
        request_timeout: seconds for one API request.
        scrape_timeout: seconds for one metrics scrape or PromQL query.
        suggester_cache_size: Suggesters kept in memory (each is rebuilt from Trials when evicted). 128:
            a fleet of more running experiments than cached ones replays history on every reconcile,
            and 100 cached Suggesters of 200 trials each measured 117 MiB (benchmarks/README.md).
        metrics_port: port of the operator's own Prometheus ``/metrics`` (0: not served).
        metrics_host: address that port listens on.
        watcher_grace_seconds: how long after start too few kopf watch streams is not yet a liveness failure.
        trial_pod_policy: what trial pod templates may ask for, per namespace (docs/security.md);
            JSON in ``KUBENAS_TRIAL_POD_POLICY``, the chart's ``trialPodPolicy`` value. Default: restricted.
        test_api_url: tests only: an insecure API server URL to log in to (the kmock emulator).
    """

    namespaces: tuple[str, ...] = ()
    prometheus_url: str | None = None
    prometheus_trial_label: str = "pod"
    resync_seconds: float = 30.0
    metrics_poll_seconds: float = 15.0
    unschedulable_seconds: float = 300.0
    debounce_seconds: float = 0.2
    retry_seconds: float = 10.0
    request_timeout: float = 30.0
    scrape_timeout: float = 5.0
    suggester_cache_size: int = 128
    metrics_port: int = 8081
    metrics_host: str = "0.0.0.0"
    watcher_grace_seconds: float = 30.0
    trial_pod_policy: podpolicy.Policies = field(default_factory=podpolicy.Policies)
    test_api_url: str | None = None

    @classmethod
    def from_env(cls, namespaces: tuple[str, ...] = (), env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``KUBENAS_*`` environment variables (see docs/operator.md)."""
        env = os.environ if env is None else env

        def number(name: str, default: float) -> float:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a number") from None
            if value < 0:
                raise ValueError(f"{name}={raw!r} must not be negative")
            return value

        return cls(
            namespaces=namespaces,
            prometheus_url=env.get("KUBENAS_PROMETHEUS_URL") or None,
            prometheus_trial_label=env.get("KUBENAS_PROMETHEUS_TRIAL_LABEL") or "pod",
            resync_seconds=number("KUBENAS_RESYNC_SECONDS", cls.resync_seconds),
            metrics_poll_seconds=number("KUBENAS_METRICS_POLL_SECONDS", cls.metrics_poll_seconds),
            unschedulable_seconds=number("KUBENAS_UNSCHEDULABLE_SECONDS", cls.unschedulable_seconds),
            debounce_seconds=number("KUBENAS_DEBOUNCE_SECONDS", cls.debounce_seconds),
            retry_seconds=number("KUBENAS_RETRY_SECONDS", cls.retry_seconds),
            request_timeout=number("KUBENAS_REQUEST_TIMEOUT", cls.request_timeout),
            scrape_timeout=number("KUBENAS_SCRAPE_TIMEOUT", cls.scrape_timeout),
            suggester_cache_size=int(number("KUBENAS_SUGGESTER_CACHE_SIZE", cls.suggester_cache_size)),
            metrics_port=int(number("KUBENAS_OPERATOR_METRICS_PORT", cls.metrics_port)),
            metrics_host=env.get("KUBENAS_OPERATOR_METRICS_HOST") or cls.metrics_host,
            watcher_grace_seconds=number("KUBENAS_WATCHER_GRACE_SECONDS", cls.watcher_grace_seconds),
            trial_pod_policy=_trial_pod_policy(env.get(TRIAL_POD_POLICY_ENV)),
            test_api_url=env.get("KUBENAS_TEST_API_URL") or None,
        )


def _trial_pod_policy(raw: str | None) -> podpolicy.Policies:
    """The policies in ``KUBENAS_TRIAL_POD_POLICY`` (JSON); unset or empty: restricted everywhere."""
    if not raw:
        return podpolicy.RESTRICTED
    try:
        return podpolicy.parse_policies(json.loads(raw))
    except ValueError as err:  # json.JSONDecodeError is a ValueError too
        raise ValueError(f"{TRIAL_POD_POLICY_ENV}: {err}") from None
