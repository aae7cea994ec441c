"""What ``kubenas run`` prints last: the best trial, its architecture, and where the results are."""

from __future__ import annotations

import json
import sys
from typing import Any

from kubenas.local import report
from kubenas.local.results import ARCHITECTURE_FILE, BEST_DIR, RunDirectory


def print_summary(run_dir: RunDirectory, stream: Any = None) -> None:
    """The best trial's architecture and where the report is: the last thing a user sees."""
    stream = stream or sys.stdout
    best = run_dir.best()
    status = run_dir.load_status()
    if status is not None:
        line = f"experiment {status.phase}"
        if status.reason:
            line += f" ({status.reason}{': ' + status.message if status.message else ''})"
        print(line, file=stream)
    if best is None:
        print("no successful trial: see trials.jsonl and trials/*/log.txt", file=stream)
    else:
        value = best.get("value")
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"best trial {best.get('trial')}: objective {shown}", file=stream)
        print(f"  metrics:      {compact(best.get('metrics'))}", file=stream)
        print(f"  parameters:   {compact(best.get('parameters'))}", file=stream)
        architecture = best.get("architecture")
        if isinstance(architecture, dict):
            # The trainer's file holds the whole configuration too; the network's shape is what to show.
            shape = architecture.get("architecture", architecture)
            print(f"  architecture: {compact(shape)}", file=stream)
            print(f"  (in full: {run_dir.root / BEST_DIR / ARCHITECTURE_FILE})", file=stream)
        front = best.get("paretoFront") or []
        if front:
            names = [m.get("name") for m in (best.get("objective") or {}).get("metrics", [])]
            print(f"Pareto front ({len(front)} trials):", file=stream)
            for member in front[:10]:
                values = {n: member.get("metrics", {}).get(n) for n in names}
                print(f"  {member.get('name')}: {compact(values)}  {compact(member.get('parameters'))}", file=stream)
            if len(front) > 10:
                print(f"  … {len(front) - 10} more in best.json", file=stream)
    print(f"results: {run_dir.root}/ (trials.jsonl, best.json)", file=stream)
    if (run_dir.root / report.REPORT_HTML).exists():
        print(f"report:  {run_dir.root / report.REPORT_HTML}", file=stream)


def compact(value: Any, limit: int = 400) -> str:
    """One line of JSON: floats to 4 significant digits, long lists counted instead of listed."""

    def shrink(item: Any) -> Any:
        if isinstance(item, float):
            return int(item) if item.is_integer() and abs(item) < 1e15 else float(f"{item:.4g}")
        if isinstance(item, dict):
            return {k: shrink(v) for k, v in item.items() if v is not None}
        if isinstance(item, list):
            if len(item) > 8 or any(isinstance(v, dict | list) for v in item):
                return f"<{len(item)} items>"
            return [shrink(v) for v in item]
        return item

    text = json.dumps(shrink(value), sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"
