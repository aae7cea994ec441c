"""The kubenas_trial SDK: parameters in, gauges and the termination message out."""

from __future__ import annotations

import json
import math
import urllib.request
from pathlib import Path

import kubenas_trial
import pytest
from kubenas_trial import sdk


def test_parameters_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBENAS_PARAMETERS", '{"lr": 0.1, "depth": 3}')
    assert kubenas_trial.parameters() == {"lr": 0.1, "depth": 3}


def test_parameters_from_file_when_env_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "params.json"
    path.write_text('{"width": 16}')
    monkeypatch.delenv("KUBENAS_PARAMETERS", raising=False)
    monkeypatch.setenv("KUBENAS_PARAMETERS_FILE", str(path))
    assert kubenas_trial.parameters() == {"width": 16}


def test_parameters_absent_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBENAS_PARAMETERS", raising=False)
    monkeypatch.delenv("KUBENAS_PARAMETERS_FILE", raising=False)
    assert kubenas_trial.parameters() == {}


@pytest.mark.parametrize(("text", "message"), [("{bad", "not valid JSON"), ("[1, 2]", "must be a JSON object")])
def test_parameters_invalid(monkeypatch: pytest.MonkeyPatch, text: str, message: str) -> None:
    monkeypatch.setenv("KUBENAS_PARAMETERS", text)
    with pytest.raises(kubenas_trial.ParametersError, match=message):
        kubenas_trial.parameters()


def test_parameters_missing_file_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBENAS_PARAMETERS", raising=False)
    monkeypatch.setenv("KUBENAS_PARAMETERS_FILE", str(tmp_path / "nope.json"))
    with pytest.raises(kubenas_trial.ParametersError, match=r"nope\.json"):
        kubenas_trial.parameters()


def test_finish_writes_valid_json(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    reporter = sdk.TrialReporter(port=0, termination_log=log)
    written = reporter.finish({"val/acc": 0.5}, accuracy=0.97, params=12345, loss=float("nan"), bad="text")
    assert json.loads(log.read_text()) == written == {"val/acc": 0.5, "accuracy": 0.97, "params": 12345}


def test_finish_absurd_payload_stays_valid_and_bounded(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    reporter = sdk.TrialReporter(port=0, termination_log=log)
    payload = {f"metric_{i:05d}": math.pi * 10**i for i in range(-150, 150)}
    payload["x" * 10_000] = 1.0
    payload["accuracy"] = 0.9
    payload["inf"] = float("inf")
    reporter.finish(payload)
    data = log.read_bytes()
    assert len(data) <= 4096
    result = json.loads(data)
    assert result and all(math.isfinite(v) for v in result.values())
    assert "metric_-0150" in result  # the first metrics given are kept
    assert "x" * 10_000 not in result and "inf" not in result


def test_finish_rounds_before_dropping(tmp_path: Path) -> None:
    payload = {f"m{i:03d}": 1 / 3 + i for i in range(200)}
    full = len(json.dumps(payload))
    assert full > 4096  # the test only means something if rounding is needed
    result = json.loads(sdk.encode_result(payload))
    assert len(result) == 200
    assert result["m000"] == pytest.approx(1 / 3, rel=1e-3)


def test_finish_overwrites_previous_result(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    log.write_text('{"accuracy": 0.1, "stale": 1}')
    sdk.TrialReporter(port=0, termination_log=log).finish(accuracy=0.8)
    assert json.loads(log.read_text()) == {"accuracy": 0.8}


def test_finish_unwritable_path_does_not_raise(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reporter = sdk.TrialReporter(port=0, termination_log=tmp_path / "missing-dir" / "log")
    assert reporter.finish(accuracy=1.0) == {"accuracy": 1.0}
    assert "cannot write" in capsys.readouterr().err


def test_report_serves_gauges() -> None:
    reporter = sdk.TrialReporter(port=0)
    assert reporter.start_server() is None  # port 0: no server, still usable
    reporter.report(1, accuracy=0.5)
    assert reporter.last == {"accuracy": 0.5}

    served = sdk.TrialReporter(port=_free_port(), address="127.0.0.1")
    try:
        served.final_step(6)
        served.report(3, {"val loss": 0.25}, accuracy=0.75, ignored=float("inf"))
        served.report(4, accuracy=0.8)
        assert served.start_server() == served.bound_port  # started once
        body = urllib.request.urlopen(f"http://127.0.0.1:{served.bound_port}/metrics", timeout=5).read().decode()
    finally:
        served.close()
    assert 'kubenas_trial_metric{name="accuracy"} 0.8' in body
    assert 'kubenas_trial_metric{name="val loss"} 0.25' in body
    assert "kubenas_trial_step 4.0" in body
    assert "kubenas_trial_final_step 6.0" in body
    assert "ignored" not in body
    assert "python_gc" not in body  # a dedicated registry


@pytest.mark.parametrize("step", [float("nan"), 0, "ten"])
def test_final_step_must_be_a_positive_number(step: object) -> None:
    with pytest.raises(ValueError, match="final step must be a number >= 1"):
        sdk.TrialReporter(port=0).final_step(step)  # type: ignore[arg-type]


def test_an_unannounced_final_step_is_not_served() -> None:
    served = sdk.TrialReporter(port=_free_port(), address="127.0.0.1")
    try:
        served.report(1, accuracy=0.5)
        body = urllib.request.urlopen(f"http://127.0.0.1:{served.bound_port}/metrics", timeout=5).read().decode()
    finally:
        served.close()
    assert "kubenas_trial_final_step" not in body  # a gauge's default 0 would read as "training is done"


def test_metrics_port_env_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBENAS_METRICS_PORT", "http")
    with pytest.raises(ValueError, match="KUBENAS_METRICS_PORT"):
        sdk.TrialReporter()


_RANK_VARIABLES = ("RANK", "NODE_RANK", "NPROC_PER_NODE", "LOCAL_RANK")


@pytest.mark.parametrize(("env", "rank"), [
    ({}, 0),
    ({"RANK": "3", "NODE_RANK": "1"}, 3),  # RANK wins: torchrun sets it for each worker
    ({"NODE_RANK": "1"}, 1),  # one process per pod
    ({"NODE_RANK": "1", "NPROC_PER_NODE": "4", "LOCAL_RANK": "2"}, 6),
])
def test_rank_from_the_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], rank: int) -> None:
    for name in _RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert kubenas_trial.rank() == rank


def test_rank_env_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "first")
    with pytest.raises(ValueError, match="environment variable RANK must be an integer"):
        kubenas_trial.rank()


def test_only_rank_zero_reports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RANK", "1")
    port = _free_port()
    other = sdk.TrialReporter(port=port, address="127.0.0.1", termination_log=tmp_path / "log")
    other.final_step(3)
    other.report(1, accuracy=0.5)
    assert other.finish(accuracy=0.9) == {"accuracy": 0.9}  # what rank 0 would write
    assert not (tmp_path / "log").exists() and other.bound_port is None and other.last == {}
    with pytest.raises(OSError):  # nothing listens: rank 0 of the trial serves the metrics
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)

    monkeypatch.setenv("RANK", "0")
    main = sdk.TrialReporter(port=0, termination_log=tmp_path / "log")
    main.finish(accuracy=0.9)
    assert json.loads((tmp_path / "log").read_text()) == {"accuracy": 0.9}


def test_checkpoint_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBENAS_CHECKPOINT_DIR", raising=False)
    assert kubenas_trial.checkpoint_dir() is None
    monkeypatch.setenv("KUBENAS_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    assert kubenas_trial.checkpoint_dir() == tmp_path / "ckpt"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
