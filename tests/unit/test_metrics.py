"""kubenas.metrics: exposition parsing, bounded scrapes, PromQL queries (against local HTTP servers)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubenas import metrics

EXPOSITION = """\
# HELP kubenas_trial_metric An intermediate metric of the trial.
# TYPE kubenas_trial_metric gauge
kubenas_trial_metric{name="accuracy"} 0.75
kubenas_trial_metric{name="loss"} 0.31
kubenas_trial_metric{name="bad"} NaN
# HELP kubenas_trial_step The trial's last reported step.
# TYPE kubenas_trial_step gauge
kubenas_trial_step 4
kubenas_trial_final_step 10
# HELP python_gc_objects_collected_total Objects collected.
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 12.0
"""


def test_parse_and_extract_trial_values() -> None:
    values = metrics.trial_values(metrics.parse_exposition(EXPOSITION))
    assert values.step == 4 and values.final_step == 10
    assert values.metrics == {"accuracy": 0.75, "loss": 0.31}


def test_a_zero_final_step_is_an_unset_gauge_not_an_announcement() -> None:
    assert metrics.trial_values(metrics.parse_exposition("kubenas_trial_final_step 0\n")).final_step is None


def test_parse_refuses_garbage() -> None:
    with pytest.raises(metrics.MetricsError):
        metrics.parse_exposition("this is { not metrics\n")


def test_parse_is_bounded() -> None:
    text = "".join(f'kubenas_trial_metric{{name="m{i}"}} {i}\n' for i in range(5000))
    assert len(metrics.parse_exposition(text, max_samples=100)) == 100
    assert len(metrics.trial_values(metrics.parse_exposition(text)).metrics) == metrics.MAX_SERIES


def test_promql_escapes_label_values() -> None:
    query = metrics.trial_query({"pod": 'a"b\\c', "namespace": "ns"})
    assert query == (
        '{__name__=~"kubenas_trial_metric|kubenas_trial_step|kubenas_trial_final_step",namespace="ns",pod="a\\"b\\\\c"}'
    )


def respond(**kwargs: object) -> Callable[[web.Request], object]:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(**kwargs)  # type: ignore[arg-type]

    return handler


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[web.Application], object]]:
    servers: list[TestServer] = []

    async def start(app: web.Application) -> str:
        server = TestServer(app)
        await server.start_server()
        servers.append(server)
        return str(server.make_url(""))

    yield start
    for server in servers:
        await server.close()


async def test_scrape_trial(serve) -> None:
    app = web.Application()
    app.router.add_get("/metrics", respond(text=EXPOSITION))
    base = await serve(app)
    async with aiohttp.ClientSession() as session:
        values = await metrics.scrape_trial(session, base + "/metrics")
    assert (values.step, values.metrics["accuracy"]) == (4, 0.75)


async def test_scrape_refuses_oversized_and_errors(serve) -> None:
    app = web.Application()
    app.router.add_get("/big", respond(text="x" * 2000))
    app.router.add_get("/err", respond(status=500))
    base = await serve(app)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(metrics.MetricsError, match="more than"):
            await metrics.scrape(session, base + "/big", max_bytes=1000)
        with pytest.raises(metrics.MetricsError, match="HTTP 500"):
            await metrics.scrape(session, base + "/err")
        with pytest.raises(metrics.MetricsError, match="cannot scrape"):
            await metrics.scrape(session, "http://127.0.0.1:9/metrics", timeout=1)


async def test_query_prometheus_api(serve) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.query["query"])
        result = [
            {"metric": {"__name__": "kubenas_trial_metric", "name": "accuracy", "pod": "p"}, "value": [1, "0.9"]},
            {"metric": {"__name__": "kubenas_trial_step", "pod": "p"}, "value": [1, "7"]},
        ]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})

    async def failing(_: web.Request) -> web.Response:
        body = {"status": "error", "errorType": "bad_data", "error": "parse error"}
        return web.Response(status=400, text=json.dumps(body))

    app = web.Application()
    app.router.add_get("/ok/api/v1/query", handler)
    app.router.add_get("/bad/api/v1/query", failing)
    base = await serve(app)
    async with aiohttp.ClientSession() as session:
        values = await metrics.query_trial(session, base + "/ok", {"pod": "p"})
        assert (values.step, values.metrics) == (7, {"accuracy": 0.9})
        assert seen == ['{__name__=~"kubenas_trial_metric|kubenas_trial_step|kubenas_trial_final_step",pod="p"}']
        with pytest.raises(metrics.MetricsError, match="bad_data"):
            await metrics.query(session, base + "/bad", "up")
