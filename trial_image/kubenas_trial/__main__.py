"""``python -m kubenas_trial`` / ``kubenas-train``: run one trial of the built-in trainer.

Exit codes: 0 done, 1 training failed (or another rank of a multi-process trial did),
2 bad parameters or environment, 3 dataset missing or malformed.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys

from kubenas_trial.sdk import ParametersError, default_reporter, parameters

EXIT_FAILED, EXIT_USAGE, EXIT_DATA = 1, 2, 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kubenas-train",
        description="Train one kubenas trial. Parameters come from KUBENAS_PARAMETERS (JSON), "
        "KUBENAS_PARAMETERS_FILE, and --param NAME=VALUE (which wins).",
    )
    parser.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE",
                        help="set one parameter (VALUE parsed as JSON when it parses, else a string)")
    parser.add_argument("--list-parameters", action="store_true", help="print every parameter as JSON and exit")
    args = parser.parse_args(argv)

    if args.list_parameters:
        from kubenas_trial.trial import describe_parameters

        print(describe_parameters())
        return 0
    try:
        params = parameters()
    except ParametersError as exc:
        print(f"kubenas-trial: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for item in args.param:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            print(f"kubenas-trial: error: --param expects NAME=VALUE, got {item!r}", file=sys.stderr)
            return EXIT_USAGE
        try:
            params[name] = json.loads(raw)
        except json.JSONDecodeError:
            params[name] = raw

    # Heavy imports only now, so a bad invocation fails fast.
    from kubenas_trial import distributed
    from kubenas_trial.config import ConfigError
    from kubenas_trial.data import DataError
    from kubenas_trial.trial import run

    try:
        if distributed.needs_local_workers():
            return distributed.run_local_workers(sys.argv[1:] if argv is None else argv)
        run(params, default_reporter())
    except ConfigError as exc:
        print(f"kubenas-trial: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DataError as exc:
        print(f"kubenas-trial: error: {exc}", file=sys.stderr)
        return EXIT_DATA
    except FloatingPointError as exc:
        print(f"kubenas-trial: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            print(f"kubenas-trial: error: cannot serve metrics on port {os.environ.get('KUBENAS_METRICS_PORT')}: "
                  f"{exc.strerror}", file=sys.stderr)
            return EXIT_FAILED
        raise
    except Exception as exc:
        if not distributed.topology().distributed or not distributed.is_peer_failure(exc):
            raise
        print(f"kubenas-trial: error: rank {distributed.topology().rank}: lost the other ranks of the trial "
              f"(one failed, was stopped, or did not answer within dist_timeout; its log names the cause): "
              f"{str(exc)[:500]}", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
