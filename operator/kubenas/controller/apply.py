"""Idempotent writes: create-or-adopt, stop, status patches, Events, the export ConfigMap.

Every function here may be repeated after a crash or a duplicate event and ends in the
same state: a 409 on create is "already there" once the owner uid matches, a 404 on
delete is "done", status writes are merge patches of absolute values.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubenas import api, workload
from kubenas.controller import kube

log = logging.getLogger(__name__)

COMPONENT = "kubenas-operator"


class OwnedByOther(Exception):
    """The name is taken by an object that belongs to another owner (e.g. a deleted experiment's)."""


async def create_owned(client: kube.Kube, resource: kube.Resource, body: Mapping[str, Any]) -> dict[str, Any]:
    """Create ``body``; if it exists already with the same controller owner, return that one.

    Raises:
        OwnedByOther: an object of that name exists with another owner; it is left alone.
    """
    meta = body["metadata"]
    try:
        return await client.create(resource, meta["namespace"], body)
    except kube.Conflict:
        existing = await client.get(resource, meta["namespace"], meta["name"])
    want = {r["uid"] for r in meta.get("ownerReferences") or []}
    have = {r.get("uid") for r in (existing.get("metadata") or {}).get("ownerReferences") or []}
    if want and not want & have:
        raise OwnedByOther(f"{resource.plural}/{meta['name']} exists and belongs to another owner")
    return existing


def status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any] | None:
    """A merge patch turning status ``old`` into ``new`` (None when equal); dropped keys become null."""
    old = dict(old or {})
    if old == new:
        return None
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    patch.update({k: v for k, v in new.items() if old.get(k) != v})
    return patch


async def write_status(
    client: kube.Kube, resource: kube.Resource, obj: Mapping[str, Any], new: Mapping[str, Any]
) -> bool:
    """Merge-patch ``obj``'s status subresource to ``new``; False when nothing changed."""
    patch = status_patch(obj.get("status"), new)
    if patch is None:
        return False
    meta = obj["metadata"]
    await client.patch(resource, meta["namespace"], meta["name"], {"status": patch}, subresource="status")
    return True


async def post_event(
    client: kube.Kube, obj: Mapping[str, Any], reason: str, message: str, *, warning: bool = False
) -> None:
    """Post a core/v1 Event about ``obj`` for ``kubectl describe``; never fails the caller."""
    meta = obj.get("metadata") or {}
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": f"{api.GROUP}/operator",
        "reportingInstance": os.environ.get("HOSTNAME", COMPONENT)[:128],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        await client.create(kube.EVENTS, meta.get("namespace"), body)
    except (kube.ApiError, OSError) as err:
        log.warning("cannot post event %s about %s: %s", reason, meta.get("name"), err)


def export_config_map(experiment: Mapping[str, Any], best: api.TrialSummary, artifact: str | None) -> dict[str, Any]:
    """ConfigMap ``<experiment>-best``: the best trial's parameters, metrics and where its artifacts are."""
    meta = experiment["metadata"]
    data = {
        "trial": best.name,
        "parameters.json": json.dumps(best.parameters, sort_keys=True, indent=2),
        "metrics.json": json.dumps(best.metrics, sort_keys=True, indent=2),
        # The architecture is the configuration the search chose; the trial image rebuilds the model from it.
        "architecture.json": json.dumps({"experiment": meta["name"], "parameters": best.parameters}, sort_keys=True),
    }
    if best.value is not None:
        data["value"] = repr(best.value)
    if artifact:
        data["artifact"] = artifact
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": export_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": workload.child_labels(meta["name"]),
            "ownerReferences": [workload.owner_reference(experiment)],
        },
        "data": data,
    }


def export_name(experiment_name: str) -> str:
    return f"{experiment_name}-best"


async def export_best(client: kube.Kube, body: Mapping[str, Any]) -> None:
    """Create the export ConfigMap, or bring an existing one (same owner) up to date."""
    existing = await create_owned(client, kube.CONFIGMAPS, body)
    patch = status_patch(existing.get("data"), body["data"])
    if patch is not None:
        meta = body["metadata"]
        await client.patch(kube.CONFIGMAPS, meta["namespace"], meta["name"], {"data": patch})
