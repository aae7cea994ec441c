"""The ``kubenas`` command: validate, run, report, operator.

Each subcommand's work lives in the module that owns it; this file only parses
arguments and dispatches, importing lazily so ``kubenas validate`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

DESCRIPTION = "Kubernetes-native search for neural architectures, hyperparameters and model compression."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubenas", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="check Experiment manifests as the cluster and operator would")
    validate.add_argument("files", nargs="+", help="YAML files (- for standard input)")
    validate.add_argument(
        "--policy",
        metavar="FILE",
        default=None,
        help="trial pod policies: the chart's trialPodPolicy value, or a values file holding it "
        "(default: restricted in every namespace)",
    )

    run = sub.add_parser("run", help="run an Experiment locally, with no cluster")
    run.add_argument("file", help="Experiment manifest")
    run.add_argument("--output", default="runs", help="results root (default: runs/)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run")
    run.add_argument("--parallel", type=int, default=None, help="override budget.parallelTrials")

    report = sub.add_parser("report", help="rebuild the report of a local run")
    report.add_argument("dir", help="a run directory, e.g. runs/digits-nas")

    operator = sub.add_parser("operator", help="run the Kubernetes operator")
    scope = operator.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], help="namespace to serve (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="serve every namespace")
    operator.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    operator.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="port of the operator's Prometheus /metrics (default 8081; 0: off)",
    )
    operator.add_argument("--verbose", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "validate":
        from kubenas import validation

        return validation.main(args.files, policy_file=args.policy)
    if args.command == "run":
        from kubenas.local import runner

        return runner.main(args)
    if args.command == "report":
        from kubenas.local import report

        return report.main(args)
    if args.command == "operator":
        from kubenas.controller import entrypoint

        return entrypoint.main(args)
    return 2  # pragma: no cover - argparse refuses unknown commands


if __name__ == "__main__":
    sys.exit(main())
