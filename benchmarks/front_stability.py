"""Is a Pareto front the same across two runs of one experiment? Compares two `kubenas run` result directories.

    python benchmarks/front_stability.py runs-a/fashion-mnist-pareto runs-b/fashion-mnist-pareto

With ``--replay``, each run's later latency measurements (the ``measured again: X ms`` lines of
its ``kubenas run`` output, saved as ``run.log`` beside the result directory's parent) are
applied again, in order and only while the trial is still noisy (as the planner asks for them), to
the trial's own result through ``kubenas.results.with_measurement``,
and the fronts are recomputed by ``kubenas.objective.pareto_front``: the current rules on the
recorded measurements.

Trials are matched by their parameters (a seeded search proposes the same configurations when
the results it learns from agree). For each configuration it prints both runs' accuracy and
latency, their ratio, the trial's own latency when it was measured again, and whether the
trial is on each run's front; then whether the fronts name the same configurations, and, for
those that differ, whether the difference is within the measured latency noise (a member of one
front that the other run's front dominates by less than ``--noise`` in latency).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from kubenas import api, objective, results
from kubenas.local.manifest import load_experiment

MEASURED = re.compile(r"\] (\S+): latency_ms measured again: ([0-9.]+) ms( \(still noisy\))?")


def _trials(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Each trial's final record by its parameters (trial.json: the status after any later measurement)."""
    out = {}
    for path in sorted((run_dir / "trials").glob("*/trial.json")):
        trial = json.loads(path.read_text())
        key = json.dumps(trial["spec"]["parameters"], sort_keys=True)
        out[key] = {"name": trial["metadata"]["name"], **trial["status"]}
    return out


def _front(run_dir: Path) -> set[str]:
    best = json.loads((run_dir / "best.json").read_text())
    return {json.dumps(m["parameters"], sort_keys=True) for m in best.get("paretoFront") or []}


def _replayed(run_dir: Path, trials: dict[str, dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """The trials with their measurements applied again by the current rules, and the front they give."""
    spec = load_experiment(run_dir / "experiment.yaml")[0].spec
    attempts = spec.cost_measurement.attempts
    log = (run_dir.parent.parent / "run.log").read_text()
    later: dict[str, list[bytes]] = {}
    for name, value, noisy in MEASURED.findall(log):
        later.setdefault(name, []).append(json.dumps({"latency_ms": float(value), "latency_noisy": int(bool(noisy))})
                                          .encode())
    out, parsed = {}, []
    for key, record in trials.items():
        metrics = dict(record.get("metrics") or {})
        if "latency_ms_trial" in metrics:  # back to the trial's own result
            metrics["latency_ms"] = metrics.pop("latency_ms_trial")
            metrics["latency_noisy"] = 1.0
        status = api.TrialStatus(phase=record["phase"], metrics=metrics, noisy_metrics=results.noisy_metrics(metrics))
        for result in later.get(record["name"], []):
            if "latency_ms" not in status.noisy_metrics or (status.cost_measurements or 0) >= attempts:
                break  # the planner measures a trial again only while it is noisy
            status = results.with_measurement(status, result)
        out[key] = {**record, "metrics": status.metrics, "noisyMetrics": status.noisy_metrics}
        parsed.append(api.Trial(metadata=api.ObjectMeta(name=key),
                                spec=api.TrialSpec(experiment="x", index=len(parsed), parameters={}), status=status))
    front = {t.name for t in objective.pareto_front(spec.objective, parsed)}
    return out, front


def _within_noise(key: str, front: set[str], trials: dict[str, dict[str, Any]], noise: float) -> bool:
    """A configuration off ``front`` only because a member beats it by less than ``noise`` in latency."""
    mine = trials[key]["metrics"]
    for other in front:
        theirs = trials[other]["metrics"]
        if theirs["accuracy"] >= mine["accuracy"] and theirs["latency_ms"] * noise >= mine["latency_ms"]:
            return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--noise", type=float, default=1.5, help="latency ratio taken as noise (default 1.5)")
    parser.add_argument("--replay", action="store_true", help="apply the recorded measurements by the current rules")
    args = parser.parse_args()
    a, b = _trials(args.run_a), _trials(args.run_b)
    front_a, front_b = _front(args.run_a), _front(args.run_b)
    if args.replay:
        (a, front_a), (b, front_b) = _replayed(args.run_a, a), _replayed(args.run_b, b)
    print("| trial (run a / b) | accuracy a / b | latency_ms a / b | ratio | own latency a / b | front a / b |")
    print("|---|---|---|---|---|---|")
    for key in sorted(a.keys() & b.keys(), key=lambda k: a[k]["name"]):
        ma, mb = a[key].get("metrics") or {}, b[key].get("metrics") or {}
        if "latency_ms" not in ma or "latency_ms" not in mb:
            print(f"| {a[key]['name']} / {b[key]['name']} | {a[key]['phase']} / {b[key]['phase']} | | | | |")
            continue
        ratio = max(ma["latency_ms"], mb["latency_ms"]) / min(ma["latency_ms"], mb["latency_ms"])
        own = " / ".join(f"{m['latency_ms_trial']:.3f}" if "latency_ms_trial" in m else "—" for m in (ma, mb))
        on = " / ".join("yes" if key in f else "no" for f in (front_a, front_b))
        print(f"| {a[key]['name']} / {b[key]['name']} | {ma['accuracy']:.4f} / {mb['accuracy']:.4f} "
              f"| {ma['latency_ms']:.3f} / {mb['latency_ms']:.3f} | {ratio:.2f} | {own} | {on} |")
    only = (a.keys() ^ b.keys())
    print(f"\nconfigurations in one run only: {len(only)}")
    print(f"front a: {sorted(a[k]['name'] for k in front_a)}; front b: {sorted(b[k]['name'] for k in front_b)}")
    differ = front_a ^ front_b
    if not differ:
        print("the fronts name the same configurations")
        return
    explained = [k for k in differ if k in a and k in b
                 and _within_noise(k, front_b if k in front_a else front_a, b if k in front_a else a, args.noise)]
    print(f"the fronts differ in {len(differ)} configurations; {len(explained)} of them within "
          f"{args.noise}x latency noise of the other front")


if __name__ == "__main__":
    main()
