"""kubenas.metrics: exposition parsing, bounded scrapes, PromQL queries (against local HTTP servers)."""

from __future__ import annotations

import asyncio
import json
import time
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
        with pytest.raises(metrics.MetricsError, match="cannot reach"):
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


# --------------------------------------------------------------------------- hostile endpoints

PADDING = "".join(f"# padding line {i:06d} of a large exposition\n" for i in range(14_000))  # ~600 KB


def dripping(chunks: list[bytes], pause: float = 0.0) -> Callable[[web.Request], object]:
    """A handler that sends its body in many writes, pausing between them."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
            await asyncio.sleep(pause)
        await response.write_eof()
        return response

    return handler


def in_pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def test_a_slow_body_in_many_small_chunks_is_read_in_full(serve) -> None:
    """A single read returns only what has arrived: the step 123, split as "12" | "3", must not be read as 12."""
    head = (PADDING + 'kubenas_trial_metric{name="accuracy"} 0.5\nkubenas_trial_step 12').encode()
    body = head + b"3\n"
    app = web.Application()
    app.router.add_get("/metrics", dripping([*in_pieces(head, 4096), b"3\n"], pause=0.001))
    base = await serve(app)
    async with aiohttp.ClientSession() as session:
        text = await metrics.scrape(session, base + "/metrics", max_bytes=len(body))  # exactly the cap
        values = await metrics.scrape_trial(session, base + "/metrics")
    assert len(body) > 500_000
    assert text.encode() == body
    assert values.step == 123 and values.metrics == {"accuracy": 0.5}


async def test_a_body_over_the_cap_fails_clearly_even_when_it_arrives_in_pieces(serve) -> None:
    app = web.Application()
    app.router.add_get("/metrics", dripping(in_pieces(PADDING.encode(), 4096)))
    base = await serve(app)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(metrics.MetricsError, match="answered more than 100000 bytes"):
            await metrics.scrape(session, base + "/metrics", max_bytes=100_000)


async def test_a_slow_loris_endpoint_fails_within_the_deadline(serve) -> None:
    """One byte every 50 ms for 30 s: each read is quick, only a total deadline ends it."""
    app = web.Application()
    app.router.add_get("/metrics", dripping([b"#"] * 600, pause=0.05))
    base = await serve(app)
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(metrics.MetricsError, match=r"did not answer in full within 0\.5 s"):
            await metrics.scrape(session, base + "/metrics", timeout=0.5)
    assert time.monotonic() - started < 5  # the server would have dripped for 30 s


async def test_prometheus_is_read_in_full_and_its_deadline_holds(serve) -> None:
    result = [{"metric": {"__name__": "kubenas_trial_step", "pod": "p"}, "value": [1, "123"]}]
    answer = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
    app = web.Application()
    app.router.add_get("/split/api/v1/query", dripping(in_pieces(answer, 7), pause=0.001))
    app.router.add_get("/slow/api/v1/query", dripping([b" "] * 600, pause=0.05))
    base = await serve(app)
    async with aiohttp.ClientSession() as session:
        assert (await metrics.query_trial(session, base + "/split", {"pod": "p"})).step == 123
        with pytest.raises(metrics.MetricsError, match=r"within 0\.5 s"):
            await metrics.query(session, base + "/slow", "up", timeout=0.5)


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        ([1, 2], "a JSON list, not an object"),
        ("success", "a JSON str, not an object"),
        (None, "a JSON NoneType, not an object"),
        ({"status": "success", "data": []}, "expected an instant vector"),
        ({"status": "success", "data": {"resultType": "vector", "result": {}}}, "expected an instant vector"),
        ({"status": "error", "errorType": "bad_data", "error": "parse error"}, "bad_data: parse error"),
    ],
    ids=["a-list", "a-string", "null", "data-a-list", "result-an-object", "an-error"],
)
def test_a_prometheus_answer_of_the_wrong_shape_is_a_clear_error(answer: object, words: str) -> None:
    with pytest.raises(metrics.MetricsError, match=words):
        metrics.vector_samples(answer)


def test_malformed_vector_entries_are_skipped() -> None:
    result = [
        "not an object",
        {"metric": ["not", "labels"], "value": [1, "2"]},
        {"metric": {"__name__": "kubenas_trial_step"}, "value": "no pair"},
        {"metric": {"__name__": "kubenas_trial_step", "pod": 7}, "value": [1, "5"]},
    ]
    samples = metrics.vector_samples({"status": "success", "data": {"resultType": "vector", "result": result}})
    assert samples == [metrics.Sample("kubenas_trial_step", {"pod": "7"}, 5.0)]


@pytest.mark.parametrize(
    ("text", "step"),
    [
        ("kubenas_trial_step 1e300\n", None),
        ("kubenas_trial_step 1e16\n", None),
        ("kubenas_trial_step -1\n", None),
        ("kubenas_trial_step +Inf\n", None),
        ("kubenas_trial_step 9007199254740992\n", 2**53),
        ("kubenas_trial_step 7\nkubenas_trial_step 1e300\n", 7),
    ],
    ids=["1e300", "past-2**53", "negative", "infinite", "exactly-2**53", "a-good-step-survives-a-bad-one"],
)
def test_steps_beyond_what_the_status_holds_are_dropped(text: str, step: int | None) -> None:
    assert metrics.trial_values(metrics.parse_exposition(text)).step == step


def test_a_huge_final_step_is_no_announcement() -> None:
    assert metrics.trial_values(metrics.parse_exposition("kubenas_trial_final_step 1e300\n")).final_step is None


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("10.1.2.3", "http://10.1.2.3:8000/metrics"),
        ("fd00::1", "http://[fd00::1]:8000/metrics"),
        ("trial.ns.svc", "http://trial.ns.svc:8000/metrics"),
    ],
    ids=["ipv4", "ipv6-bracketed", "a-name"],
)
def test_trial_urls_bracket_ipv6_pod_ips(host: str, url: str) -> None:
    assert metrics.trial_url(host, 8000, "/metrics") == url


async def test_an_ipv6_endpoint_is_scraped() -> None:
    app = web.Application()
    app.router.add_get("/metrics", respond(text=EXPOSITION))
    server = TestServer(app, host="::1")
    try:
        await server.start_server()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    try:
        async with aiohttp.ClientSession() as session:
            values = await metrics.scrape_trial(session, metrics.trial_url("::1", server.port or 0))
    finally:
        await server.close()
    assert values.step == 4
