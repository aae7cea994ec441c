"""Intermediate trial metrics: Prometheus exposition parsing, direct scrapes, PromQL queries.

A trial publishes ``kubenas_trial_metric{name="..."}`` gauges and ``kubenas_trial_step``
(docs/trial.md). The operator reads them either from the Prometheus server that scrapes the
trial pods (``metrics.source: prometheus``) or from the pod itself (``direct``). Everything
read is bounded: a trial cannot make the operator read megabytes or keep thousands of series.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from kubenas import results

METRIC = "kubenas_trial_metric"
STEP = "kubenas_trial_step"
FINAL_STEP = "kubenas_trial_final_step"
MAX_SCRAPE_BYTES = 1 << 20
MAX_SERIES = 256
IDENTITY = {"Accept-Encoding": "identity"}
MAX_STEP = 2**53
"""The largest step accepted: every integer up to it is exact in a float gauge, and it fits the CRD's int64."""


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
    """The trial's step and metrics among ``samples`` (non-finite values and unusable names dropped).

    A step that is not a whole number in ``[0, MAX_STEP]`` is dropped, not clipped: a gauge
    of 1e300 is garbage, and clipping it would tell early stopping the trial reached its last rung.
    """
    step: int | None = None
    final_step: int | None = None
    metrics: dict[str, float] = {}
    for s in samples:
        if not math.isfinite(s.value):
            continue
        if s.name == STEP and valid_step(s.value):
            step = int(s.value) if step is None else max(step, int(s.value))
        elif s.name == FINAL_STEP and s.value >= 1 and valid_step(s.value):  # 0: an unset gauge, not an announcement
            final_step = int(s.value)
        elif s.name == METRIC and _metric_name_ok(s.labels.get("name")) and len(metrics) < MAX_SERIES:
            metrics[s.labels["name"]] = s.value
    return TrialValues(step=step, metrics=metrics, final_step=final_step)


def _metric_name_ok(name: str | None) -> bool:
    """A name a result may carry too: 1 to ``results.MAX_METRIC_NAME_LENGTH`` characters of Unicode text."""
    return name is not None and 0 < len(name) <= results.MAX_METRIC_NAME_LENGTH and results.is_unicode_text(name)


def valid_step(value: float) -> bool:
    """Whether a step gauge's value is one the status can hold: finite, in ``[0, MAX_STEP]``."""
    return math.isfinite(value) and 0 <= value <= MAX_STEP


def trial_url(host: str, port: int, path: str = "/metrics") -> str:
    """``http://host:port/path``, an IPv6 address in brackets (``http://[fd00::1]:8000/metrics``)."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    authority = f"[{host}]" if isinstance(literal, ipaddress.IPv6Address) else host
    return f"http://{authority}:{port}/{path.lstrip('/')}"


async def fetch(
    session: aiohttp.ClientSession,
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    params: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    """GET ``url``: the HTTP status and the whole body, read to its end within ``timeout`` seconds in all.

    The deadline covers connecting, the headers and every byte of the body, so an endpoint that
    answers slowly (a byte at a time) cannot hold the caller longer than ``timeout``.

    Raises:
        MetricsError: unreachable, not answered in full within ``timeout``, or a body over ``max_bytes``.
    """
    try:
        async with asyncio.timeout(timeout):
            async with session.get(
                url,
                params=params,
                headers=IDENTITY,
                auto_decompress=False,  # a compressed body could inflate far past max_bytes
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                body = await read_capped(response.content, max_bytes)
                status = response.status
    except TimeoutError:
        raise MetricsError(f"{url} did not answer in full within {timeout:g} s") from None
    except (aiohttp.ClientError, OSError, ValueError) as err:  # ValueError: a URL aiohttp cannot use
        raise MetricsError(f"cannot reach {url}: {err or type(err).__name__}") from None
    if len(body) > max_bytes:
        raise MetricsError(f"{url} answered more than {max_bytes} bytes")
    return status, body


async def read_capped(content: aiohttp.StreamReader, max_bytes: int) -> bytes:
    """The stream to its end, or its first ``max_bytes + 1`` bytes when it is longer (the caller refuses those).

    One ``read(n)`` returns only what has arrived so far, so a body sent in several writes is read in a loop.
    """
    body = bytearray()
    while len(body) <= max_bytes:
        chunk = await content.read(max_bytes + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


async def scrape(
    session: aiohttp.ClientSession, url: str, *, timeout: float = 5.0, max_bytes: int = MAX_SCRAPE_BYTES
) -> str:
    """GET a /metrics endpoint: the whole body, at most ``max_bytes``, within ``timeout`` seconds in all.

    Raises:
        MetricsError: unreachable, an HTTP error, too slow, or a body larger than ``max_bytes``.
    """
    status, body = await fetch(session, url, timeout=timeout, max_bytes=max_bytes)
    if status != 200:
        raise MetricsError(f"{url} answered HTTP {status}")
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
        MetricsError: Prometheus is unreachable, too slow, or answered an error or something not a vector.
    """
    url = base_url.rstrip("/") + "/api/v1/query"
    status, body = await fetch(session, url, params={"query": promql}, timeout=timeout, max_bytes=MAX_SCRAPE_BYTES)
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise MetricsError(f"Prometheus answered HTTP {status} with non-JSON") from None
    return vector_samples(doc, status)


def vector_samples(doc: Any, status: int = 200) -> list[Sample]:
    """The samples of a decoded ``/api/v1/query`` answer; malformed entries are skipped.

    Raises:
        MetricsError: the answer is an error, or not a JSON object holding an instant vector.
    """
    if not isinstance(doc, dict):
        raise MetricsError(f"Prometheus answered HTTP {status} with a JSON {type(doc).__name__}, not an object")
    if doc.get("status") != "success":
        raise MetricsError(f"Prometheus query failed: {doc.get('errorType')}: {doc.get('error')}")
    data = doc.get("data")
    result_type = data.get("resultType") if isinstance(data, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    if result_type != "vector" or not isinstance(result, list):
        raise MetricsError(f"expected an instant vector, got {result_type}")
    samples = []
    for item in result[: MAX_SERIES * 4]:
        sample = _vector_sample(item)
        if sample is not None:
            samples.append(sample)
    return samples


def _vector_sample(item: Any) -> Sample | None:
    if not isinstance(item, dict) or not isinstance(item.get("metric", {}), dict):
        return None
    labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
    try:
        value = float(item["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return Sample(labels.pop("__name__", ""), labels, value)


async def query_trial(
    session: aiohttp.ClientSession, base_url: str, labels: Mapping[str, str], *, timeout: float = 5.0
) -> TrialValues:
    """A trial's latest values from Prometheus, selected by ``labels`` (e.g. its pod)."""
    return trial_values(await query(session, base_url, trial_query(labels), timeout=timeout))
