"""The Grafana dashboard against reality: every panel's PromQL, as the chart renders it, returns data.

A real Prometheus scrapes the real operator's /metrics and real trial processes (the
kubenas_trial SDK, started from each trial Job's own command and environment), with the
labels the chart's ServiceMonitor and PodMonitor give their series. The dashboard's variables
are filled from its own variable queries, as Grafana fills them. A panel whose query returns
nothing fails the test, named.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kmock_cluster import NAMESPACE, Emulator, Kubelet, Outcome
from loopback import free_port
from operator_harness import EXP, Operator, eventually, experiment, index_of

ROOT = Path(__file__).resolve().parents[3]
HELM = ROOT / "tools" / "helm" if (ROOT / "tools" / "helm").exists() else shutil.which("helm")
RELEASE, RELEASE_NAMESPACE = "kubenas", "kubenas-system"
OPERATOR_JOB = f"{RELEASE}-metrics"  # the ServiceMonitor's job label: the metrics Service's name
RANGE = "1h"  # Grafana's $__range for a one-hour dashboard

# A trial as a user writes one: the SDK's three calls. It holds at its last step until RELEASE exists.
TRIAL = textwrap.dedent(
    """
    import os, pathlib, time
    import kubenas_trial

    params = kubenas_trial.parameters()
    accuracy = params["width"] / 100
    kubenas_trial.final_step(3)
    for step in (1, 2, 3):
        kubenas_trial.report(step, accuracy=accuracy * step / 3, loss=1 - accuracy * step / 3)
        time.sleep(0.3)
    while os.environ.get("HOLD") and not pathlib.Path(os.environ["HOLD"]).exists():
        time.sleep(0.1)
    kubenas_trial.finish(accuracy=accuracy, loss=1 - accuracy)
    """
)

pytestmark = pytest.mark.skipif(HELM is None, reason="helm missing: run `make helm`")


def rendered_dashboard() -> dict[str, Any]:
    """The dashboard as the chart ships it (helm template, monitoring.dashboard.enabled)."""
    done = subprocess.run(
        [str(HELM), "template", RELEASE, str(ROOT / "helm" / "kubenas"), "--namespace", RELEASE_NAMESPACE,
         "--set", "monitoring.dashboard.enabled=true"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    (cm,) = [d for d in yaml.safe_load_all(done.stdout) if d and d.get("kind") == "ConfigMap"]
    return json.loads(cm["data"]["kubenas.json"])


def fill(expr: str, values: dict[str, str]) -> str:
    """Grafana's substitution of $variables (one value each) and $__range."""
    expr = expr.replace("$__range", RANGE)
    return re.sub(r"\$(\w+)", lambda m: values.get(m.group(1), m.group(0)), expr)


def variables(prometheus: Any, dashboard: dict[str, Any]) -> dict[str, str]:
    """Each query variable set to a value its own query offers (the metric variable: accuracy), in order."""
    values: dict[str, str] = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", variable["definition"])
        assert match, variable["definition"]
        series, label = fill(match.group(1), values), match.group(2)
        offered = prometheus.api(f"label/{label}/values", **{"match[]": series})
        assert offered, f"variable {variable['name']}: {variable['definition']} offers nothing"
        values[variable["name"]] = "accuracy" if "accuracy" in offered else offered[0]
    return values


def empty_panels(prometheus: Any, dashboard: dict[str, Any], values: dict[str, str]) -> list[str]:
    """The panels (title: query) whose query returns no series: instant queries, range for time series."""
    empty = []
    now = time.time()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            query = fill(target["expr"], values)
            if panel["type"] == "timeseries":
                result = prometheus.query_range(query, start=now - 60, end=now, step=2)
            else:
                result = prometheus.query(query, time=now)
            if not result:
                empty.append(f"{panel['title']}: {query}")
    return empty


async def test_every_dashboard_panel_returns_data(
    cluster: Emulator, operator: Operator, prometheus_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dashboard = rendered_dashboard()
    port = free_port()
    monkeypatch.setenv("KUBENAS_OPERATOR_METRICS_PORT", str(port))
    monkeypatch.setenv("KUBENAS_OPERATOR_METRICS_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBENAS_PROMETHEUS_URL", prometheus_server.url)
    # The ServiceMonitor's labels on the operator's series.
    prometheus_server.add_target(f"127.0.0.1:{port}", namespace=RELEASE_NAMESPACE, job=OPERATOR_JOB, pod="kubenas-0")
    script = tmp_path / "train.py"
    script.write_text(TRIAL)
    hold = tmp_path / "release"
    processes: list[asyncio.subprocess.Process] = []

    async def trial(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
        """The Job's container run as the pod's process, scraped with the PodMonitor's labels."""
        container = job["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        metrics_port = free_port()
        labels = job["spec"]["template"]["metadata"]["labels"]
        env |= {
            "KUBENAS_METRICS_PORT": str(metrics_port),
            "KUBENAS_METRICS_ADDRESS": "127.0.0.1",
            "KUBENAS_TERMINATION_LOG": str(tmp_path / f"{job['metadata']['name']}.termination-log"),
            "HOLD": str(hold) if index_of(job) > 0 else "",
        }
        env.pop("KUBENAS_PARAMETERS_FILE", None)  # the downward-API volume does not exist here
        prometheus_server.add_target(
            f"127.0.0.1:{metrics_port}",
            namespace=NAMESPACE,
            pod=f"{job['metadata']['name']}-pod",
            experiment=labels["kubenas.io/experiment"],
            trial=labels["kubenas.io/trial"],
            job=f"{RELEASE_NAMESPACE}/{RELEASE}-trials",
        )
        argv = [sys.executable, *container["command"][1:], *container.get("args", [])]
        proc = await asyncio.create_subprocess_exec(*argv, env={**os.environ, **env})
        processes.append(proc)
        code = await proc.wait()
        message = Path(env["KUBENAS_TERMINATION_LOG"]).read_text()
        return Outcome(exit_code=code, message=message)

    body = experiment(
        budget={"maxTrials": 3, "parallelTrials": 3, "maxFailedTrials": 0},
        metrics={"source": "prometheus"},
        earlyStopping={"rule": "none"},
    )
    body["spec"]["trialTemplate"]["spec"]["containers"][0].update(command=["python", str(script)])
    await operator.start()
    try:
        async with Kubelet(str(cluster.url), trial, running_first=True) as k:
            await k.request("POST", EXP, body)

            def every_panel_has_data() -> list[str] | None:
                try:
                    values = variables(prometheus_server, dashboard)
                except AssertionError as err:
                    return [str(err)]
                return empty_panels(prometheus_server, dashboard, values) or None

            async def settled() -> bool:
                return await asyncio.to_thread(every_panel_has_data) is None

            try:
                await eventually(settled, timeout=45, interval=1.0)
            except AssertionError:
                missing = await asyncio.to_thread(every_panel_has_data)
                raise AssertionError("panels without data:\n" + "\n".join(missing or [])) from None
    finally:
        hold.touch()
        for proc in processes:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
