"""A real Prometheus scrapes a running trial that uses the kubenas_trial SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from loopback import free_port

# A training script as a user would write it: three SDK lines. It waits for a line on stdin
# before each step, so the test can hold it until Prometheus has scraped the previous one
# (deterministic however loaded the machine is), and keeps serving until stdin closes.
SCRIPT = textwrap.dedent(
    """
    import sys
    import kubenas_trial

    params = kubenas_trial.parameters()
    kubenas_trial.report(0)
    print("ready", flush=True)
    for step, acc in enumerate(params["curve"], start=1):
        sys.stdin.readline()
        kubenas_trial.report(step, accuracy=acc, loss=1 - acc)
        print(f"step {step}", flush=True)
    kubenas_trial.finish(accuracy=params["curve"][-1])
    sys.stdin.read()
    """
)


RANGE_STEP = 0.5


def test_promql_returns_each_reported_step(prometheus_server: Any, tmp_path: Path) -> None:
    curve = [0.12, 0.37, 0.58, 0.81, 0.93]
    port = free_port()
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        "KUBENAS_PARAMETERS": json.dumps({"curve": curve}),
        "KUBENAS_METRICS_PORT": str(port),
        "KUBENAS_METRICS_ADDRESS": "127.0.0.1",
        "KUBENAS_TERMINATION_LOG": str(tmp_path / "termination-log"),
        "KUBENAS_TRIAL": "exp-3",
    }
    trial = subprocess.Popen([sys.executable, str(script)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert trial.stdout is not None and trial.stdin is not None
        assert trial.stdout.readline().strip() == "ready"
        address = f"127.0.0.1:{port}"
        prometheus_server.add_target(address, trial="exp-3")
        prometheus_server.wait_for_target(address)
        start = time.time()
        for step in range(1, len(curve) + 1):
            trial.stdin.write("next\n")
            trial.stdin.flush()
            assert trial.stdout.readline().strip() == f"step {step}"
            _wait_for_scrape(prometheus_server, 'kubenas_trial_step{trial="exp-3"}', float(step))
        # A range query evaluates at start, start + step, ... <= end: the last scrape's timestamp can
        # fall after the last evaluation point unless the range runs one step past it. The trial
        # still serves, so the last values stay current (no staleness marker) until `end`.
        time.sleep(RANGE_STEP)
        end = time.time()
        trial.stdin.close()
        assert trial.wait(timeout=30) == 0
    finally:
        if trial.poll() is None:
            trial.kill()
            trial.wait()

    accuracy = prometheus_server.query_range(
        'kubenas_trial_metric{trial="exp-3",name="accuracy"}', start=start, end=end, step=RANGE_STEP
    )
    assert len(accuracy) == 1
    seen = _distinct_in_order(float(value) for _ts, value in accuracy[0]["values"])
    assert seen == curve

    steps = prometheus_server.query_range('kubenas_trial_step{trial="exp-3"}', start=start, end=end, step=RANGE_STEP)
    seen_steps = _distinct_in_order(float(value) for _ts, value in steps[0]["values"])
    assert seen_steps[-len(curve):] == [1.0, 2.0, 3.0, 4.0, 5.0]

    # The same values through an instant query at the end, as the operator reads final gauges.
    last = prometheus_server.query('kubenas_trial_metric{trial="exp-3",name="loss"}', time=end)
    assert float(last[0]["value"][1]) == 1 - curve[-1]
    assert json.loads((tmp_path / "termination-log").read_text()) == {"accuracy": curve[-1]}


def _wait_for_scrape(prometheus: Any, promql: str, value: float, timeout: float = 60.0) -> None:
    """Until Prometheus holds ``value`` as the latest sample of ``promql``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = prometheus.query(promql)
        if result and float(result[0]["value"][1]) == value:
            return
        time.sleep(0.2)
    raise TimeoutError(f"Prometheus never saw {promql} == {value}")


def _distinct_in_order(values: object) -> list[float]:
    out: list[float] = []
    for value in values:  # type: ignore[attr-defined]
        if not out or out[-1] != value:
            out.append(value)
    return out
