"""The operator's own /metrics, and its liveness probe failing once a kopf watch stream has ended."""

from __future__ import annotations

import aiohttp
import pytest
from kmock_cluster import Emulator, Kubelet
from loopback import free_port
from operator_harness import EXP, Operator, by_width, eventually, experiment, finished
from prometheus_client.parser import text_string_to_metric_families

KINDS = ("experiments", "trials", "jobs", "pods")
TIMEOUT = aiohttp.ClientTimeout(total=5)


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(url) as resp:
        assert resp.status == 200
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_match_the_experiment(
    cluster: Emulator, operator: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("KUBENAS_OPERATOR_METRICS_PORT", str(port))
    monkeypatch.setenv("KUBENAS_OPERATOR_METRICS_HOST", "127.0.0.1")
    cluster.fail_creates["trials"] = 1  # one API error (500), one failed reconcile, retried
    await operator.start()
    async with Kubelet(str(cluster.url), by_width) as k:
        await k.request("POST", EXP, experiment())
        await k.request("POST", EXP, experiment("other", budget={"maxTrials": 6, "parallelTrials": 3}))
        await k.request("POST", EXP, experiment("bad", algorithm={"name": "NoSuchOptimizer"}))
        await eventually(lambda: finished(k), timeout=30)
        await eventually(lambda: finished(k, "other"), timeout=30)
        url = f"http://127.0.0.1:{port}/metrics"

        async def settled() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            samples = await scrape(url)
            assert value(samples, "kubenas_experiments", phase="Succeeded") == 2, samples
            return samples

        samples = await eventually(settled)
        assert value(samples, "kubenas_experiments", phase="Failed") == 1  # the invalid spec
        assert value(samples, "kubenas_experiments", phase="Running") == 0
        assert value(samples, "kubenas_trials", phase="Succeeded") == 4 + 6
        assert value(samples, "kubenas_trials", phase="Running") == 0
        assert value(samples, "kubenas_api_errors_total", code="500") == 1
        assert value(samples, "kubenas_reconcile_total", result="error") == 1
        ok = value(samples, "kubenas_reconcile_total", result="success")
        assert ok >= 3
        assert value(samples, "kubenas_reconcile_seconds_count") == ok + 1
        assert 0 <= value(samples, "kubenas_suggester_cache_size") <= 2
        assert value(samples, "kubenas_watch_streams_ended") == 0
        assert value(samples, "process_resident_memory_bytes") > 0
        await k.request("DELETE", f"{EXP}/other")
        gone = await eventually(lambda: _without_other(url))
        assert value(gone, "kubenas_trials", phase="Succeeded") == 4


async def _without_other(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    samples = await scrape(url)
    return samples if value(samples, "kubenas_experiments", phase="Succeeded") == 1 else None


async def health(url: str) -> int:
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(url) as resp:
            return resp.status
    except (aiohttp.ClientConnectionError, TimeoutError):
        return 0


async def test_liveness_fails_once_a_watch_stream_has_ended(
    cluster: Emulator, operator: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBENAS_WATCHER_GRACE_SECONDS", "1")
    url = f"http://127.0.0.1:{free_port()}/healthz"
    operator.extra_args.append(f"--liveness={url}")
    await operator.start()
    try:  # healthy: all four streams (experiments, trials, jobs, pods) run (kopf caches a probe for 10 s)
        await eventually(lambda: all(cluster.requests["WATCH", kind] for kind in KINDS))
        assert await eventually(lambda: _json(url)) == {"watchStreams": 4}
    finally:
        await operator.stop()
    # A kind the server does not serve at startup (CRD installed later): kopf starts no watch stream for it,
    # logs nothing and would wait forever; the probe fails after the grace period, so the pod restarts.
    cluster.undiscoverable.add("trials")
    await operator.start()
    try:
        await eventually(lambda: _equals(health(url), 500), timeout=20)
    finally:
        await operator.stop()


async def _json(url: str) -> object:
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(url) as resp:
            return await resp.json() if resp.status == 200 else None
    except (aiohttp.ClientConnectionError, TimeoutError):
        return None  # not serving yet


async def _equals(status: object, wanted: int) -> bool:
    return (await status) == wanted  # type: ignore[misc]
