"""``kubenas operator``: run the kopf operator over the chosen namespaces."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses

import kopf

from kubenas.controller import handlers  # noqa: F401  (importing it registers the kopf handlers)
from kubenas.controller.settings import Settings


def main(args: argparse.Namespace) -> int:
    """Run until interrupted; returns the process exit code."""
    namespaces = tuple(args.namespace or ())
    settings = Settings.from_env(namespaces=() if args.all_namespaces else namespaces)
    if getattr(args, "metrics_port", None) is not None:
        settings = dataclasses.replace(settings, metrics_port=args.metrics_port)
    kopf.configure(verbose=bool(args.verbose))  # kopf's log format for kopf and kubenas alike
    asyncio.run(run(settings, liveness=args.liveness))
    return 0


async def run(settings: Settings, liveness: str | None = None) -> None:
    """Run the operator in this event loop until it is stopped (no namespaces: all of them)."""
    memo = kopf.Memo(settings=settings)
    await kopf.operator(
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        memo=memo,
        liveness_endpoint=liveness,
    )
