"""``kubenas operator``: run the kopf operator over the chosen namespaces."""

from __future__ import annotations

import argparse
import asyncio
import logging

import kopf

from kubenas.controller import handlers
from kubenas.controller.settings import Settings


def main(args: argparse.Namespace) -> int:
    """Run until interrupted; returns the process exit code."""
    namespaces = tuple(args.namespace or ())
    settings = Settings.from_env(namespaces=() if args.all_namespaces else namespaces)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    kopf.configure(verbose=bool(args.verbose))
    asyncio.run(run(settings, liveness=args.liveness))
    return 0


async def run(settings: Settings, liveness: str | None = None) -> None:
    """The operator's event loop (also what tests run through ``KopfRunner``)."""
    memo = kopf.Memo(settings=settings)
    assert handlers.startup  # the import registers the handlers
    await kopf.operator(
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        memo=memo,
        liveness_endpoint=liveness,
    )
