"""Operator throughput against the kmock API emulator: apply→first Job latency, RSS, CPU, API calls.

The real operator runs as its own process (``kubenas operator``, default settings unless
given), so psutil measures it alone; the emulator and the fake kubelet run in this process
(the harness of tests/integration/operator). kmock is not an API server: no etcd, no
admission, no watch cache, and it answers in microseconds on loopback, so these figures say
what the operator itself costs, not what a cluster adds.

    python benchmarks/operator_throughput.py                  # latency 1/10/100, then 20 × 20 trials
    python benchmarks/operator_throughput.py --experiments 5 --trials 10 --skip-latency
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import kmock
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "operator"))

from kmock_cluster import NAMESPACE, Emulator, Kubelet, Outcome, metrics_result  # noqa: E402
from operator_harness import EXP, experiment  # noqa: E402


class TimedEmulator(Emulator):
    """Records when each experiment's first Job was created (its POST reaching the server); stores no Events."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.first_job: dict[str, float] = {}

    async def _handle(self, request: Any) -> Any:
        if (
            request.resource is not None
            and request.resource.plural == "jobs"
            and request.action == kmock.action.CREATE
            and isinstance(request.data, dict)
        ):
            labels = (request.data.get("metadata") or {}).get("labels") or {}
            self.first_job.setdefault(labels.get("kubenas.io/experiment", ""), time.perf_counter())
        response = await super()._handle(request)
        plural = request.resource.plural if request.resource is not None else None
        if plural == "events":
            # kmock scans every stored object on each request: thousands of Events nobody reads would make
            # the emulator, not the operator, the bottleneck (the operator's POST is still made and counted).
            name = request.name or ((request.data or {}).get("metadata") or {}).get("name")
            self._objects.pop((request.resource, request.namespace, name), None)
        return response


class OperatorProcess:
    """``kubenas operator --all-namespaces`` as a child process, sampled by psutil."""

    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env, "KUBENAS_TEST_API_URL": url, "KUBENAS_OPERATOR_METRICS_PORT": "0"}
        self.proc: asyncio.subprocess.Process | None = None
        self.peak_rss = 0
        self.samples: list[tuple[float, int]] = []

    async def __aenter__(self) -> OperatorProcess:
        argv = [sys.executable, "-m", "kubenas.cli", "operator", "--all-namespaces"]
        self.proc = await asyncio.create_subprocess_exec(
            *argv, env=self.env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        self.ps = psutil.Process(self.proc.pid)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 20)
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def rss(self) -> int:
        rss = int(self.ps.memory_info().rss)
        self.peak_rss = max(self.peak_rss, rss)
        return rss


async def wait_for(check: Any, timeout: float, interval: float = 0.01) -> None:
    deadline = time.perf_counter() + timeout
    while not check():
        if time.perf_counter() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(interval)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def post(session: Any, url: str, body: dict[str, Any]) -> None:
    async with session.post(url + EXP, json=body) as resp:
        assert resp.status < 300, await resp.text()


async def latency(concurrency: list[int], repeats: dict[int, int], env: dict[str, str]) -> list[dict[str, Any]]:
    """apply→first Job for ``n`` experiments posted at once; a fresh emulator and operator per level."""
    import aiohttp

    rows = []
    for n in concurrency:
        async with TimedEmulator() as cluster, kmock.Server(cluster):
            url = str(cluster.url).rstrip("/")
            async with OperatorProcess(url, env) as op, aiohttp.ClientSession() as session:
                await wait_for(lambda: all(cluster.requests["WATCH", k] for k in ("experiments", "jobs")), 60)
                await asyncio.sleep(1.0)  # let the startup settle
                delays: list[float] = []
                me = psutil.Process()
                op_cpu, emu_cpu, wall = op.cpu_seconds(), sum(me.cpu_times()[:2]), time.perf_counter()
                for r in range(repeats.get(n, 1)):
                    names = [f"lat-{n}-{r}-{i}" for i in range(n)]
                    budget = {"maxTrials": 2, "parallelTrials": 1}
                    started = time.perf_counter()
                    await asyncio.gather(*(post(session, url, experiment(m, budget=budget)) for m in names))
                    await wait_for(lambda names=names: all(m in cluster.first_job for m in names), 120)
                    delays += [cluster.first_job[m] - started for m in names]
                    await asyncio.sleep(0.3)
                rows.append(
                    {
                        "n": n,
                        "samples": len(delays),
                        "p50_ms": 1000 * statistics.median(delays),
                        "p99_ms": 1000 * pct(delays, 0.99),
                        "max_ms": 1000 * max(delays),
                        "rss_mib": op.rss() / 2**20,
                        # Who was busy: the operator process, or this one (emulator + harness)?
                        "operator_cpu_s": op.cpu_seconds() - op_cpu,
                        "emulator_cpu_s": sum(me.cpu_times()[:2]) - emu_cpu,
                        "wall_s": time.perf_counter() - wall,
                    }
                )
                print(f"  {n:>3} concurrent: {rows[-1]}", flush=True)
    return rows


async def quick(params: dict[str, Any], job: dict[str, Any]) -> Outcome:
    await asyncio.sleep(0.2)  # a trial "runs" for 0.2 s
    return metrics_result(accuracy=params["width"] / 100)


async def throughput(experiments: int, trials: int, parallel: int, env: dict[str, str]) -> dict[str, Any]:
    """``experiments`` × ``trials`` driven to completion by the fake kubelet; RSS, CPU, API calls."""
    async with TimedEmulator() as cluster, kmock.Server(cluster):
        url = str(cluster.url).rstrip("/")
        async with OperatorProcess(url, env) as op:
            await wait_for(lambda: all(cluster.requests["WATCH", k] for k in ("experiments", "jobs")), 60)
            await asyncio.sleep(1.0)
            idle_rss, cpu0 = op.rss(), op.cpu_seconds()
            cluster.by_agent.clear()
            async with Kubelet(url, quick, interval=0.2) as k:
                started = time.perf_counter()
                budget = {"maxTrials": trials, "parallelTrials": parallel, "maxFailedTrials": 0}
                for i in range(experiments):
                    await k.request("POST", EXP, experiment(f"tp-{i}", budget=budget))

                async def done() -> bool:
                    items = await k.items(EXP)
                    return sum((e.get("status") or {}).get("phase") == "Succeeded" for e in items) == experiments

                while not await done():
                    op.rss()
                    if time.perf_counter() - started > 900:
                        raise TimeoutError("experiments did not finish")
                    await asyncio.sleep(0.5)
                wall = time.perf_counter() - started
                trials_made = len(await k.items(f"/apis/kubenas.io/v1alpha1/namespaces/{NAMESPACE}/trials"))
            cpu = op.cpu_seconds() - cpu0
            final_rss = op.rss()
    total = experiments * trials
    calls: Counter[str] = Counter()
    for (agent, action, plural), count in cluster.by_agent.items():
        if agent in ("kopf", "kubenas"):
            calls[f"{agent} {action} {plural}"] += count
    return {
        "experiments": experiments,
        "trials": total,
        "trials_created": trials_made,
        "wall_s": wall,
        "trials_per_s": total / wall,
        "cpu_s": cpu,
        "cpu_ms_per_trial": 1000 * cpu / total,
        "idle_rss_mib": idle_rss / 2**20,
        "peak_rss_mib": op.peak_rss / 2**20,
        "final_rss_mib": final_rss / 2**20,
        "calls_per_trial": {k: round(v / total, 2) for k, v in sorted(calls.items())},
        "writes_per_trial": round(
            sum(v for k, v in calls.items() if k.split()[1] in ("CREATE", "UPDATE", "DELETE")) / total, 2
        ),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,10,100", help="concurrent experiments per latency level")
    parser.add_argument("--repeats", type=int, default=20, help="rounds at concurrency 1 (10: 3 rounds, 100: 1)")
    parser.add_argument("--experiments", type=int, default=20)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=4, help="parallelTrials of each experiment")
    parser.add_argument("--debounce", default=None, help="KUBENAS_DEBOUNCE_SECONDS (default: the operator's 0.2)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    env = {} if args.debounce is None else {"KUBENAS_DEBOUNCE_SECONDS": args.debounce}
    print(f"operator throughput, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, debounce={args.debounce}")
    if not args.skip_latency:
        levels = [int(n) for n in args.concurrency.split(",") if n]
        await latency(levels, {1: args.repeats, 10: 3}, env)
    if not args.skip_throughput:
        result = await throughput(args.experiments, args.trials, args.parallel, env)
        for key, value in result.items():
            print(f"  {key}: {value:.3g}" if isinstance(value, float) else f"  {key}: {value}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
