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
    asyncio.run(run(settings, liveness=liveness_endpoint(args.liveness)))
    return 0


def liveness_endpoint(url: str | None) -> str | None:
    """The ``--liveness`` URL with a bare IPv6 host bracketed.

    The chart binds the endpoint to the pod IP (``http://$(POD_IP):8080/healthz``), which the
    kubelet substitutes unbracketed; the last ``:`` before the path separates the port.
    """
    if url is None or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    authority, slash, path = rest.partition("/")
    host, colon, port = authority.rpartition(":")
    if ":" in host and not host.startswith("["):
        return f"{scheme}://[{host}]{colon}{port}{slash}{path}"
    return url


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
