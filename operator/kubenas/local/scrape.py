"""Read a running trial's intermediate metrics straight from its ``/metrics`` endpoint (no Prometheus).

Everything read from a trial is bounded: each request has a total deadline (connecting, the
headers and the whole body), the body a size limit, and anything that does not parse is
ignored rather than trusted. Reading and parsing are ``kubenas.metrics``'s, shared with the
operator's direct scrapes.
"""

from __future__ import annotations

import asyncio
import threading

import aiohttp

from kubenas import metrics

MAX_BYTES = 256 * 1024
TIMEOUT_SECONDS = 1.0


def scrape(
    port: int, path: str = "/metrics", host: str = "127.0.0.1", timeout: float = TIMEOUT_SECONDS
) -> metrics.TrialValues | None:
    """The trial's step and metrics at ``http://host:port/path``, in one request of its own.

    None when the trial does not answer (yet), answers an error, garbage, more than
    ``MAX_BYTES`` or takes longer than ``timeout`` seconds in all.
    """

    async def once() -> metrics.TrialValues | None:
        async with aiohttp.ClientSession() as session:
            return await scrape_with(session, port, path, host, timeout)

    return asyncio.run(once())


async def scrape_with(
    session: aiohttp.ClientSession, port: int, path: str, host: str = "127.0.0.1", timeout: float = TIMEOUT_SECONDS
) -> metrics.TrialValues | None:
    """:func:`scrape` over an open session."""
    try:
        text = await metrics.scrape(session, metrics.trial_url(host, port, path), timeout=timeout, max_bytes=MAX_BYTES)
        return metrics.trial_values(metrics.parse_exposition(text))
    except metrics.MetricsError:
        return None


class TrialScraper:
    """Scrapes one trial in a background thread, often enough to see most of its steps.

    Epochs of small models can take well under a second, faster than the runner's tick;
    scraping on its own clock keeps the learning curve (what early stopping judges) dense.

    Args:
        port: the trial's metrics port.
        path: the metrics path.
        interval: seconds between scrapes.
    """

    def __init__(self, port: int, path: str = "/metrics", interval: float = 0.1) -> None:
        self.port = port
        self.path = path
        self.interval = interval
        self.timeout = min(TIMEOUT_SECONDS, interval * 5)
        self._lock = threading.Lock()
        self._pending: list[metrics.TrialValues] = []
        self._last_step: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"scrape-{port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.run(self._scrape_until_stopped())

    async def _scrape_until_stopped(self) -> None:
        async with aiohttp.ClientSession() as session:
            while not self._stop.is_set():
                values = await scrape_with(session, self.port, self.path, timeout=self.timeout)
                if values is not None:
                    self._keep(values)
                await asyncio.sleep(self.interval)

    def _keep(self, values: metrics.TrialValues) -> None:
        with self._lock:
            # Keep one sample per new step, and always the latest (metrics may move within a step).
            if self._pending and values.step == self._last_step:
                self._pending[-1] = values
            else:
                self._pending.append(values)
            self._last_step = values.step

    def drain(self) -> list[metrics.TrialValues]:
        """The samples seen since the last call, oldest first (at most one per step)."""
        with self._lock:
            pending, self._pending = self._pending, []
        return pending

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * TIMEOUT_SECONDS)
