"""Intermediate trial metrics: Prometheus exposition parsing, direct scrapes, PromQL queries.

A trial publishes ``kubenas_trial_metric{name="..."}`` gauges and ``kubenas_trial_step``
(DESIGN.md §4). The operator reads them either from the Prometheus server that scrapes the
trial pods (``metrics.source: prometheus``) or from the pod itself (``direct``). Everything
read is bounded: a trial cannot make the operator read megabytes or keep thousands of series.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

METRIC = "kubenas_trial_metric"
STEP = "kubenas_trial_step"
FINAL_STEP = "kubenas_trial_final_step"
MAX_SCRAPE_BYTES = 1 << 20
MAX_SERIES = 256


class MetricsError(Exception):
    """Metrics could not be read (unreachable, too large, or not Prometheus text)."""


@dataclass(frozen=True)
class Sample:
    """One exposition sample."""

    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class TrialValues:
    """A trial's latest intermediate values.

    Attributes:
        step: the last step reported (``kubenas_trial_step``), if any.
        metrics: the latest value of each ``kubenas_trial_metric`` by its ``name`` label.
        final_step: the step the trial said its last report will carry (``kubenas_trial_final_step``).
    """

    step: int | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    final_step: int | None = None


def parse_exposition(text: str, max_samples: int = MAX_SERIES * 4) -> list[Sample]:
    """Samples in Prometheus text exposition format (at most ``max_samples``).

    Raises:
        MetricsError: the text is not valid exposition format.
    """
    samples: list[Sample] = []
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples.append(Sample(s.name, dict(s.labels), float(s.value)))
                if len(samples) >= max_samples:
                    return samples
    except (ValueError, TypeError, IndexError) as err:
        raise MetricsError(f"not Prometheus text format: {err}") from None
    return samples


def trial_values(samples: Iterable[Sample]) -> TrialValues:
    """The trial's step and metrics among ``samples`` (non-finite values dropped)."""
    step: int | None = None
    final_step: int | None = None
    metrics: dict[str, float] = {}
    for s in samples:
        if not math.isfinite(s.value):
            continue
        if s.name == STEP:
            step = int(s.value) if step is None else max(step, int(s.value))
        elif s.name == FINAL_STEP and s.value >= 1:  # 0: an exporter's unset gauge, not an announcement
            final_step = int(s.value)
        elif s.name == METRIC and s.labels.get("name") and len(metrics) < MAX_SERIES:
            metrics[s.labels["name"]] = s.value
    return TrialValues(step=step, metrics=metrics, final_step=final_step)


async def scrape(
    session: aiohttp.ClientSession, url: str, *, timeout: float = 5.0, max_bytes: int = MAX_SCRAPE_BYTES
) -> str:
    """GET a /metrics endpoint, reading at most ``max_bytes``.

    Raises:
        MetricsError: unreachable, an HTTP error, or a body larger than ``max_bytes``.
    """
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                raise MetricsError(f"{url} answered HTTP {response.status}")
            body = await response.content.read(max_bytes + 1)
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        raise MetricsError(f"cannot scrape {url}: {err or type(err).__name__}") from None
    if len(body) > max_bytes:
        raise MetricsError(f"{url} returned more than {max_bytes} bytes")
    return body.decode("utf-8", errors="replace")


async def scrape_trial(session: aiohttp.ClientSession, url: str, *, timeout: float = 5.0) -> TrialValues:
    """A trial's values scraped straight from its metrics endpoint."""
    return trial_values(parse_exposition(await scrape(session, url, timeout=timeout)))


def label_matcher(labels: Mapping[str, str]) -> str:
    """A PromQL label matcher body, e.g. ``pod="exp-1-abc",namespace="ns"`` (values escaped)."""

    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return ",".join(f'{k}="{escape(v)}"' for k, v in sorted(labels.items()))


def trial_query(labels: Mapping[str, str]) -> str:
    """One PromQL query returning the trial's metric gauges, its step and its final step."""
    matcher = label_matcher(labels)
    sep = "," if matcher else ""
    return f'{{__name__=~"{METRIC}|{STEP}|{FINAL_STEP}"{sep}{matcher}}}'


async def query(session: aiohttp.ClientSession, base_url: str, promql: str, *, timeout: float = 5.0) -> list[Sample]:
    """An instant PromQL query (``/api/v1/query``), as samples (at most ``MAX_SERIES * 4``).

    Raises:
        MetricsError: Prometheus is unreachable or answered an error.
    """
    url = base_url.rstrip("/") + "/api/v1/query"
    try:
        async with session.get(url, params={"query": promql}, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            body = await response.content.read(MAX_SCRAPE_BYTES + 1)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        raise MetricsError(f"cannot query Prometheus at {base_url}: {err or type(err).__name__}") from None
    if len(body) > MAX_SCRAPE_BYTES:
        raise MetricsError("Prometheus answer too large")
    try:
        doc = json.loads(body)
    except ValueError:
        raise MetricsError(f"Prometheus answered HTTP {status} with non-JSON") from None
    if doc.get("status") != "success":
        raise MetricsError(f"Prometheus query failed: {doc.get('errorType')}: {doc.get('error')}")
    data = doc.get("data") or {}
    if data.get("resultType") != "vector":
        raise MetricsError(f"expected an instant vector, got {data.get('resultType')}")
    samples = []
    for item in (data.get("result") or [])[: MAX_SERIES * 4]:
        labels = dict(item.get("metric") or {})
        try:
            value = float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        samples.append(Sample(labels.pop("__name__", ""), labels, value))
    return samples


async def query_trial(
    session: aiohttp.ClientSession, base_url: str, labels: Mapping[str, str], *, timeout: float = 5.0
) -> TrialValues:
    """A trial's latest values from Prometheus, selected by ``labels`` (e.g. its pod)."""
    return trial_values(await query(session, base_url, trial_query(labels), timeout=timeout))
