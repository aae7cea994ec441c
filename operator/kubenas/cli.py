"""The ``kubenas`` command: validate, run, report, status, export, operator.

Each subcommand's work lives in the module that owns it; this file only parses
arguments and dispatches, importing lazily so ``kubenas validate`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

DEBUG_ENV = "KUBENAS_DEBUG"
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

    report = sub.add_parser(
        "report",
        help="the HTML/PNG report of a local run (DIR) or of an experiment on a cluster (EXPERIMENT)",
        description="An existing directory (or a path with /) is a local run, unless -n, --context or --kubeconfig "
        "is given; anything else is the name of an Experiment on the cluster.",
    )
    report.add_argument("dir", metavar="DIR|EXPERIMENT", help="a run directory (runs/digits-nas) or an Experiment")
    report.add_argument(
        "-o", "--output", default=None, help="where to write it (default: DIR itself, or ./EXPERIMENT-report)"
    )
    cluster_arguments(report)

    status = sub.add_parser("status", help="the trials of an experiment on a cluster, and its best so far")
    status.add_argument("experiment", help="the Experiment's name")
    cluster_arguments(status)
    status.add_argument("-w", "--watch", action="store_true", help="redraw until the experiment ends")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between reads with --watch (default 2)")

    export = sub.add_parser("export", help="the best trial of an experiment on a cluster: parameters, architecture")
    export.add_argument("experiment", help="the Experiment's name")
    cluster_arguments(export)
    export.add_argument("-o", "--output", default=None, help="directory to write into (default ./EXPERIMENT-best)")

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
    """Run one subcommand; an error nobody foresaw is one line on stderr and exit status 1, not a traceback.

    ``KUBENAS_DEBUG=1`` lets the exception through (the tests set it, so a bug is never hidden).
    """
    args = build_parser().parse_args(argv)
    try:
        return dispatch(args)
    except Exception as error:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"kubenas: error: {one_line(error)} (set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return 1


def one_line(error: BaseException, limit: int = 500) -> str:
    """``Type: message`` on one line, cut to ``limit`` characters."""
    text = " ".join(str(error).split())
    described = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return described if len(described) <= limit else described[: limit - 1] + "…"


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "validate":
        from kubenas import validation

        return validation.main(args.files, policy_file=args.policy)
    if args.command == "run":
        from kubenas.local import runner

        return runner.main(args)
    if args.command == "report" and is_local_run(args):
        from kubenas.local import report

        return report.main(args)
    if args.command in ("status", "report", "export"):
        from kubenas import clustercommands

        return int(getattr(clustercommands, args.command)(args))
    if args.command == "operator":
        from kubenas.controller import entrypoint

        return entrypoint.main(args)
    return 2  # pragma: no cover - argparse refuses unknown commands


def cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """``-n``, ``--context``, ``--kubeconfig``, as kubectl takes them."""
    parser.add_argument("-n", "--namespace", default=None, help="namespace (default: the context's)")
    parser.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")


def is_local_run(args: argparse.Namespace) -> bool:
    """``kubenas report X``: X is a local run directory, not an Experiment on a cluster."""
    if "/" in args.dir:
        return True  # an Experiment's name never holds one
    cluster = args.namespace or args.context or args.kubeconfig
    return Path(args.dir).is_dir() and not cluster


if __name__ == "__main__":
    sys.exit(main())
