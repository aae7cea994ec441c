"""``kubenas status|report|export EXPERIMENT``: an experiment on a cluster (the API emulator), shown as a local run is.

The CLI is synchronous (the official client) and the emulator serves from the test's event
loop, so a command runs in a thread once the operator has stopped (kopf's test runner holds
sys.stdout while it runs), or as its own process.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kmock_cluster import NAMESPACE, Emulator, Kubelet, Outcome, metrics_result
from kubenas import api, cli
from kubenas.controller import apply
from kubenas.local.live import format_value
from loopback import free_port
from operator_harness import CONFIGMAPS, EXP, TRIALS, Operator, by_width, eventually, experiment, finished

LOCAL_TESTS = Path(__file__).resolve().parents[1] / "local"


def local_helpers() -> Any:
    """tests/integration/local/run_helpers.py: the stub trial's manifest and ``kubenas`` as a user runs it."""
    spec = importlib.util.spec_from_file_location("local_run_helpers", LOCAL_TESTS / "run_helpers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_kubeconfig(path: Path, server: str, namespace: str = NAMESPACE) -> Path:
    """A kubeconfig whose current context points at ``server`` with ``namespace``; context ``other`` elsewhere."""
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": "test-token"}}],
        "contexts": [
            {"name": "emulator", "context": {"cluster": "emulator", "user": "tester", "namespace": namespace}},
            {"name": "other", "context": {"cluster": "emulator", "user": "tester", "namespace": "elsewhere"}},
        ],
        "current-context": "emulator",
    }
    path.write_text(yaml.safe_dump(document))
    return path


async def kubenas(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``kubenas ARGS`` in a thread (the operator stopped): (exit status, stdout, stderr)."""
    code = await asyncio.to_thread(cli.main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def headings_and_plots(html: str) -> tuple[list[str], list[str]]:
    return re.findall(r"<h2>(.*?)</h2>", html), re.findall(r"<img src='([^']+)'", html)


def table_rows(html: str) -> list[tuple[str, str]]:
    """(trial, phase) of each row of the report's trials table."""
    return re.findall(r"<tr(?: class='best')?><td>([^<]+)</td><td class='[^']*'>([^<]+)</td>", html)


async def test_status_export_and_report_of_an_experiment_the_operator_ran(
    cluster: Emulator, operator: Operator, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_kubeconfig(tmp_path / "config", str(cluster.url))
    gate = asyncio.Event()

    async def gated(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
        await gate.wait()
        return await by_width(params, job)

    await operator.start()
    async with Kubelet(str(cluster.url), gated) as k:
        await k.request("POST", EXP, experiment(budget={"maxTrials": 4, "parallelTrials": 2}))
        await eventually(lambda: _running(k))

        # --watch draws the experiment again as it changes, and returns once it has ended.
        watch = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kubenas.cli", "status", "exp", "--watch", "--interval", "0.2",
            env={**os.environ, "KUBECONFIG": str(config)}, stdout=asyncio.subprocess.PIPE,
        )
        assert watch.stdout is not None
        first = await asyncio.wait_for(watch.stdout.readline(), timeout=60)
        assert first.decode().startswith("exp  Running"), first
        gate.set()  # the trials end only once the first view is out
        rest = (await asyncio.wait_for(watch.stdout.read(), timeout=60)).decode()
        assert await watch.wait() == 0
        assert "exp  Succeeded (BudgetSpent)" in rest

        status = await eventually(lambda: finished(k))
        trials = await k.items(TRIALS)
        cm = (await k.request("GET", f"{CONFIGMAPS}/exp-best"))["data"]
    await operator.stop()  # kopf's test runner holds sys.stdout while it runs: the commands run in a thread now
    best = status["bestTrial"]

    # The current context and its namespace by default, as kubectl.
    monkeypatch.setenv("KUBECONFIG", str(config))
    code, out, err = await kubenas(capsys, "status", "exp")
    assert (code, err) == (0, "")
    assert "exp  Succeeded (BudgetSpent)  ·  4/4 trials finished, 0 running" in out
    for t in trials:
        row = next(line for line in out.splitlines() if line.startswith(t["metadata"]["name"] + " "))
        assert "Succeeded" in row and format_value(t["status"]["metrics"]["accuracy"]) in row
    assert f"{best['name']} accuracy={format_value(best['value'])}" in out

    code, out, err = await kubenas(capsys, "export", "exp", "-o", str(tmp_path / "best"))
    assert (code, err) == (0, "")
    names = ("best.json", "parameters.json", "metrics.json", "architecture.json")
    exported = {name: json.loads((tmp_path / "best" / name).read_text()) for name in names}
    assert exported["best.json"]["trial"] == cm["trial"] == best["name"]
    assert exported["parameters.json"] == json.loads(cm["parameters.json"]) == best["parameters"]
    assert exported["metrics.json"] == best["metrics"]
    assert exported["architecture.json"] == json.loads(cm["architecture.json"])
    assert f"best trial {best['name']}: objective {best['value']:.4f}" in out
    assert "experiment Succeeded (BudgetSpent" in out

    code, out, err = await kubenas(capsys, "report", "exp", "-n", NAMESPACE, "-o", str(tmp_path / "report"))
    assert (code, err) == (0, "")
    page = (tmp_path / "report" / "report.html").read_text()
    assert headings_and_plots(page) == (
        ["Best trial", "Best so far", "Objective against each parameter", "Trials"],
        ["best_so_far.png", "parameters.png"],
    )
    assert sorted(name for name, _ in table_rows(page)) == sorted(t["metadata"]["name"] for t in trials)


async def _running(k: Kubelet) -> bool:
    status = (await k.request("GET", f"{EXP}/exp")).get("status") or {}
    return status.get("phase") == "Running"


async def test_a_cluster_report_has_the_sections_of_the_local_report_of_the_same_run(
    cluster: Emulator, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A local stub run, its objects posted to the cluster as the operator would have written them."""
    helpers = local_helpers()
    manifest = tmp_path / "small.yaml"
    manifest.write_text(yaml.safe_dump(helpers.stub_manifest("small", max_trials=4, parallel=2)))
    result = await asyncio.to_thread(helpers.run_kubenas, "run", str(manifest), "--output", "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = tmp_path / "runs" / "small"
    local_page = (run_dir / "report.html").read_text()

    status = api.ExperimentStatus.model_validate(json.loads((run_dir / "run.json").read_text())["status"])
    trials = [api.Trial.model_validate(json.loads(p.read_text())) for p in run_dir.glob("trials/*/trial.json")]
    await post_as_the_operator(cluster, yaml.safe_load(manifest.read_text()), status, trials)
    config = write_kubeconfig(tmp_path / "config", str(cluster.url))

    code, out, err = await kubenas(capsys, "report", "small", "--kubeconfig", str(config), "-o", str(tmp_path / "r"))
    assert (code, err) == (0, "")
    cluster_page = (tmp_path / "r" / "report.html").read_text()
    assert headings_and_plots(cluster_page) == headings_and_plots(local_page)
    assert headings_and_plots(local_page)[1] == ["best_so_far.png", "parameters.png", "curves.png"]
    assert table_rows(cluster_page) == table_rows(local_page)
    for png in headings_and_plots(local_page)[1]:
        assert (tmp_path / "r" / png).stat().st_size > 1000

    code, out, err = await kubenas(capsys, "status", "small", "--kubeconfig", str(config))
    assert (code, err) == (0, "")
    local_best = json.loads((run_dir / "best.json").read_text())
    assert f"{local_best['trial']} accuracy={format_value(local_best['value'])}" in out  # the live view's words
    for name, phase in table_rows(local_page):
        assert re.search(rf"^\s*{name}\s+{phase}\b", out, flags=re.M), (name, phase, out)

    # The local form of `kubenas report` still reads a run directory.
    code, out, err = await kubenas(capsys, "report", str(run_dir), "-o", str(tmp_path / "again"))
    assert (code, err) == (0, "")
    assert headings_and_plots((tmp_path / "again" / "report.html").read_text()) == headings_and_plots(local_page)


async def post_as_the_operator(
    cluster: Emulator, manifest: dict[str, Any], status: api.ExperimentStatus, trials: list[api.Trial]
) -> None:
    """The Experiment, its Trials and its export ConfigMap, with their statuses, through the API."""
    async with Kubelet(str(cluster.url), by_width) as k:
        k.paused = True
        body = {**manifest, "metadata": {"name": manifest["metadata"]["name"], "namespace": NAMESPACE}}
        created = await k.request("POST", EXP, body)
        name = body["metadata"]["name"]
        await k.request("PATCH", f"{EXP}/{name}/status", {"status": status.to_wire()}, patch=True)
        for t in trials:
            labels = {"kubenas.io/experiment": name, "kubenas.io/trial": t.name}
            trial = {**t.to_wire(), "metadata": {"name": t.name, "namespace": NAMESPACE, "labels": labels}}
            await k.request("POST", TRIALS, trial)
            await k.request("PATCH", f"{TRIALS}/{t.name}/status", {"status": t.status.to_wire()}, patch=True)
        assert status.best_trial is not None
        await k.request("POST", CONFIGMAPS, apply.export_config_map(created, status.best_trial, None))


async def test_errors_are_one_line_like_kubectl(
    cluster: Emulator, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = str(write_kubeconfig(tmp_path / "config", str(cluster.url)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    async def error(*args: str) -> str:
        code, out, err = await kubenas(capsys, *args)
        assert code == 1 and out == "" and err.count("\n") == 1, (code, out, err)
        return err.strip()

    missing = str(tmp_path / "nowhere")
    assert await error("status", "exp", "--kubeconfig", missing) == (
        f"kubenas status: no kubeconfig found ({missing}): pass --kubeconfig or set KUBECONFIG"
    )
    monkeypatch.setenv("KUBECONFIG", missing)
    assert (await error("export", "exp")).startswith("kubenas export: no kubeconfig found")
    assert await error("status", "exp", "--kubeconfig", config, "--context", "nope") == (
        f'kubenas status: context "nope" does not exist in {config}'
    )
    assert await error("status", "exp", "--kubeconfig", config) == (
        "kubenas status: Error from server (NotFound): "
        f'experiments.kubenas.io "exp" not found in namespace "{NAMESPACE}"'
    )
    assert "in namespace \"elsewhere\"" in await error("status", "exp", "--kubeconfig", config, "--context", "other")

    async with Kubelet(str(cluster.url), by_width) as k:
        k.paused = True
        await k.request("POST", EXP, experiment())
    cluster.forbid_lists.add("trials")
    assert await error("report", "exp", "--kubeconfig", config) == (
        "kubenas report: Error from server (Forbidden): injected: cannot list trials"
    )
    cluster.forbid_lists.clear()

    cluster.undiscoverable.update({"experiments", "trials"})
    assert await error("status", "absent", "--kubeconfig", config) == (
        'kubenas status: the server doesn\'t have a resource type "experiments.kubenas.io": are the kubenas CRDs '
        "installed? (kubectl apply -f crds/, or the Helm chart)"
    )

    unreachable = str(write_kubeconfig(tmp_path / "down", f"http://127.0.0.1:{free_port()}"))
    assert (await error("status", "exp", "--kubeconfig", unreachable)).startswith(
        "kubenas status: Unable to connect to the server http://127.0.0.1:"
    )


async def test_export_before_the_end_is_the_best_so_far(
    cluster: Emulator, operator: Operator, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = str(write_kubeconfig(tmp_path / "config", str(cluster.url)))

    async def first_then_hang(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
        return metrics_result(accuracy=0.5) if job["metadata"]["name"].endswith("-0") else Outcome(kind="hang")

    await operator.start()
    async with Kubelet(str(cluster.url), first_then_hang) as k:
        await k.request("POST", EXP, experiment(budget={"maxTrials": 4, "parallelTrials": 2}))
        status = await eventually(lambda: _best_so_far(k))
    await operator.stop()
    code, out, err = await kubenas(capsys, "export", "exp", "--kubeconfig", config, "-o", str(tmp_path / "e"))
    assert (code, err) == (0, "")
    assert "note: exp is Running and has no export yet: this is the best so far" in out
    assert json.loads((tmp_path / "e" / "best.json").read_text())["trial"] == status["bestTrial"]["name"]


async def test_export_without_a_successful_trial_says_so(
    cluster: Emulator, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = str(write_kubeconfig(tmp_path / "config", str(cluster.url)))
    async with Kubelet(str(cluster.url), by_width) as k:
        k.paused = True
        await k.request("POST", EXP, experiment())
    code, out, err = await kubenas(capsys, "export", "exp", "--kubeconfig", config, "-o", str(tmp_path / "e"))
    assert (code, out) == (1, "")
    assert err == "kubenas export: exp has no successful trial yet: nothing to export\n"
    code, out, err = await kubenas(capsys, "status", "exp", "--kubeconfig", config)
    assert code == 0 and "no status yet (is the operator serving this namespace?)" in out


async def _best_so_far(k: Kubelet) -> dict[str, Any] | None:
    status = (await k.request("GET", f"{EXP}/exp")).get("status") or {}
    return status if status.get("bestTrial") else None
