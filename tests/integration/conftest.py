"""Shared integration fixtures: a real Prometheus server on loopback."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from loopback import free_port

PROMETHEUS_BINARY = "/usr/bin/prometheus"


@dataclass
class PrometheusServer:
    """A running Prometheus: its base URL, its file-based scrape targets, and a PromQL client.

    Scrape targets are added at run time with :meth:`add_target` (file service discovery,
    re-read every second), so one server can scrape processes started after it.
    """

    url: str
    targets_file: Path
    targets: list[dict[str, Any]] = field(default_factory=list)

    def add_target(self, address: str, **labels: str) -> None:
        """Scrape ``address`` (host:port, path /metrics) every second, with extra target labels."""
        self.targets.append({"targets": [address], "labels": labels})
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.targets))
        tmp.replace(self.targets_file)

    def api(self, path: str, **params: Any) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``; raises on an error status."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus {path} failed: {body}")
        return body["data"]

    def query(self, promql: str, **params: Any) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        return self.api("query", query=promql, **params)["result"]

    def query_range(self, promql: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        """A range query's result matrix."""
        return self.api("query_range", query=promql, start=start, end=end, step=step)["result"]

    def wait_for_target(self, address: str, timeout: float = 30.0) -> None:
        """Block until Prometheus has scraped ``address`` successfully at least once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for target in self.api("targets")["activeTargets"]:
                if target["scrapeUrl"].split("/")[2] == address and target["health"] == "up":
                    return
            time.sleep(0.2)
        raise TimeoutError(f"Prometheus did not scrape {address} within {timeout} s")


@pytest.fixture
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus (Debian's /usr/bin/prometheus) on a free loopback port, scraping every second.

    Yields a :class:`PrometheusServer`; add targets with ``add_target("127.0.0.1:PORT")``.
    Skips when the binary is absent (``make test`` installs it).
    """
    binary = shutil.which("prometheus") or PROMETHEUS_BINARY
    if not Path(binary).exists():
        pytest.skip("prometheus is not installed (make prometheus)")
    root = tmp_path_factory.mktemp("prometheus")
    targets = root / "targets.json"
    targets.write_text("[]")
    config = root / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: trials\n    file_sd_configs:\n"
        f"      - files: ['{targets}']\n        refresh_interval: 1s\n"
    )
    port = free_port()
    log = (root / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={root / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                output = (root / "prometheus.log").read_text()
                raise RuntimeError(f"prometheus exited with {process.returncode}: {output}")
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("prometheus did not become ready within 30 s")
            time.sleep(0.1)
        yield PrometheusServer(url=url, targets_file=targets)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
