"""Read a running trial's intermediate metrics straight from its ``/metrics`` endpoint (no Prometheus).

Everything read from a trial is bounded: the connection has a deadline, the body a size
limit, and anything that does not parse is ignored rather than trusted. Parsing is
``kubenas.metrics``'s, shared with the operator's direct scrapes.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time

from kubenas import metrics

MAX_BYTES = 256 * 1024
TIMEOUT_SECONDS = 1.0


def scrape(
    port: int, path: str = "/metrics", host: str = "127.0.0.1", timeout: float = TIMEOUT_SECONDS
) -> metrics.TrialValues | None:
    """The trial's step and metrics at ``http://host:port/path``.

    None when the trial does not answer (yet), answers an error, garbage, more than
    ``MAX_BYTES`` or takes longer than ``timeout`` seconds in all.
    """
    deadline = time.monotonic() + timeout
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Accept": "text/plain"})
        response = conn.getresponse()
        if response.status != 200:
            return None
        body = bytearray()
        while len(body) <= MAX_BYTES:
            if time.monotonic() > deadline:
                return None
            chunk = response.read(64 * 1024)
            if not chunk:
                break
            body += chunk
        if len(body) > MAX_BYTES:
            return None
        return metrics.trial_values(metrics.parse_exposition(body.decode("utf-8", errors="replace")))
    except (OSError, http.client.HTTPException, metrics.MetricsError, ValueError):
        return None
    finally:
        with contextlib.suppress(OSError):
            conn.close()


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
        self._lock = threading.Lock()
        self._pending: list[metrics.TrialValues] = []
        self._last_step: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"scrape-{port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            values = scrape(self.port, self.path, timeout=min(TIMEOUT_SECONDS, self.interval * 5))
            if values is not None:
                with self._lock:
                    # Keep one sample per new step, and always the latest (metrics may move within a step).
                    if self._pending and values.step == self._last_step:
                        self._pending[-1] = values
                    else:
                        self._pending.append(values)
                    self._last_step = values.step
            self._stop.wait(self.interval)

    def drain(self) -> list[metrics.TrialValues]:
        """The samples seen since the last call, oldest first (at most one per step)."""
        with self._lock:
            pending, self._pending = self._pending, []
        return pending

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * TIMEOUT_SECONDS)
