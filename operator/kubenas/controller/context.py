"""What the handlers share: settings, clients and caches (none of it is state that matters)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf

from kubenas import search
from kubenas.controller import kube
from kubenas.controller.settings import Settings
from kubenas.controller.telemetry import Telemetry

FAILURES_SHOWN_AFTER = 2  # reconciles failed in a row before the Experiment shows it (Synced=False, an Event)


@dataclass
class Context:
    """The operator's shared clients and caches; losing any of it costs time, never correctness."""

    settings: Settings
    kube: kube.Kube
    http: aiohttp.ClientSession
    suggesters: search.SuggesterCache
    telemetry: Telemetry = field(default_factory=Telemetry)
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="plan"))
    last_poll: dict[str, float] = field(default_factory=dict)
    spec_problems: dict[tuple[str, int | None], str] = field(default_factory=dict)
    server_checked: set[tuple[str, int | None]] = field(default_factory=set)  # specs whose Job passed a dry run
    failing: dict[tuple[str, str], int] = field(default_factory=dict)  # reconciles failed in a row, per experiment
    suggesters_lock: threading.Lock = field(default_factory=threading.Lock)


def create(settings: Settings, credentials: Callable[[], kopf.ConnectionInfo | None], **telemetry: Any) -> Context:
    """A Context whose clients report to its Telemetry (``telemetry``: its other gauges' callbacks)."""
    suggesters = search.SuggesterCache(settings.suggester_cache_size)
    failing: dict[tuple[str, str], int] = {}
    metrics = Telemetry(
        suggester_cache_size=lambda: len(suggesters),
        experiments_failing=lambda: sum(n >= FAILURES_SHOWN_AFTER for n in failing.values()),
        **telemetry,
    )
    return Context(
        settings=settings,
        kube=kube.Kube(credentials, timeout=settings.request_timeout, on_error=metrics.api_error),
        http=aiohttp.ClientSession(),
        suggesters=suggesters,
        telemetry=metrics,
        failing=failing,
    )
