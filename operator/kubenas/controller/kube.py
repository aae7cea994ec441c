"""A small async Kubernetes REST client: the operator's own API calls.

kopf watches; this client writes. It speaks plain JSON over aiohttp (the official client
blocks the event loop and deserialises slowly) with the credentials kopf logged in with,
and maps HTTP statuses to a few exceptions so callers state idempotency in one place:
409 on create is "already there", 404 on delete is "done".
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import kopf

JSON_MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = "kubenas-operator"  # tells our writes from kopf's in audit logs


class ApiError(Exception):
    """An API call that failed with an HTTP status.

    Attributes:
        status: the HTTP status code.
        reason: the Status object's reason (e.g. AlreadyExists, Conflict, NotFound).
    """

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(ApiError):
    """404: the object or resource does not exist."""


class Conflict(ApiError):
    """409: the name is taken (on create) or the resourceVersion is stale (on update)."""


class Gone(ApiError):
    """410: the resourceVersion is too old."""


def is_transient(err: BaseException) -> bool:
    """Whether retrying the same request later may succeed.

    Network errors, timeouts, 5xx, 429 and a quota that is full for now are transient; any
    other 4xx is the server refusing the request itself (invalid, forbidden), so retrying
    the same body gives the same answer.
    """
    if isinstance(err, ApiError):
        return err.status >= 500 or err.status == 429 or (err.status == 403 and "exceeded quota" in err.message)
    return isinstance(err, aiohttp.ClientError | TimeoutError | OSError)


def is_refusal(err: BaseException) -> bool:
    """A 4xx answer that retrying cannot change (see :func:`is_transient`)."""
    return isinstance(err, ApiError) and 400 <= err.status < 500 and not is_transient(err)


_ERRORS: dict[int, type[ApiError]] = {404: NotFound, 409: Conflict, 410: Gone}


@dataclass(frozen=True)
class Resource:
    """An API resource: where its objects live on the server."""

    group: str
    version: str
    plural: str

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        parts = [base]
        if namespace:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(self.plural)
        if name:
            parts.append(quote(name, safe=""))
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


EXPERIMENTS = Resource("kubenas.io", "v1alpha1", "experiments")
TRIALS = Resource("kubenas.io", "v1alpha1", "trials")
JOBS = Resource("batch", "v1", "jobs")
PODS = Resource("", "v1", "pods")
EVENTS = Resource("", "v1", "events")
CONFIGMAPS = Resource("", "v1", "configmaps")
SERVICES = Resource("", "v1", "services")


class Kube:
    """Async JSON client over one aiohttp session.

    Args:
        credentials: returns the current ``kopf.ConnectionInfo`` (kopf re-logs in on 401,
            so it is read on each request, not once).
        timeout: per-request timeout in seconds.
        on_error: told the HTTP status of every failed request, or ``"network"`` (for metrics).
    """

    def __init__(
        self,
        credentials: Callable[[], kopf.ConnectionInfo | None],
        timeout: float = 30.0,
        on_error: Callable[[int | str], None] = lambda _: None,
    ) -> None:
        self._credentials = credentials
        self._on_error = on_error
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._session_for: kopf.ConnectionInfo | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        return await self._request("GET", resource.path(namespace, name))

    async def list(
        self, resource: Resource, namespace: str | None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Objects of ``resource`` in ``namespace``, filtered by ``labels`` here too.

        The server filters by labelSelector; filtering again keeps correctness on servers
        (and emulators) that ignore it.
        """
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else {}
        items: list[dict[str, Any]] = []
        cont: str | None = None
        while True:
            params = {**query, "limit": "500", **({"continue": cont} if cont else {})}
            body = await self._request("GET", f"{resource.path(namespace)}?{urlencode(params)}")
            items += [i for i in body.get("items") or [] if _labels_match(i, labels)]
            cont = (body.get("metadata") or {}).get("continue")
            if not cont:
                return items

    async def create(
        self, resource: Resource, namespace: str | None, body: Mapping[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Create ``body``; with ``dry_run`` the server admits it (defaults, validation, webhooks), stores nothing."""
        query = "?dryRun=All" if dry_run else ""
        return await self._request("POST", resource.path(namespace) + query, body)

    async def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """JSON merge patch (include metadata.resourceVersion in it for optimistic concurrency)."""
        return await self._request("PATCH", resource.path(namespace, name, subresource), patch, JSON_MERGE_PATCH)

    async def delete(self, resource: Resource, namespace: str | None, name: str) -> bool:
        """Delete with background propagation; False when it was already gone."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        try:
            await self._request("DELETE", resource.path(namespace, name), body)
        except NotFound:
            return False
        return True

    async def _request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        session, info = await self._ensure_session()
        headers = {"Accept": "application/json", "Content-Type": content_type, "User-Agent": USER_AGENT}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        data = None if body is None else json.dumps(body)
        url = info.server.rstrip("/") + path
        try:
            async with session.request(method, url, data=data, headers=headers) as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            self._on_error("network")
            raise
        if response.status >= 400:
            self._on_error(response.status)
            raise _error(response.status, text)
        return json.loads(text) if text else {}

    async def _ensure_session(self) -> tuple[aiohttp.ClientSession, kopf.ConnectionInfo]:
        info = self._credentials()
        if info is None:
            raise ApiError(401, "Unauthorized", "the operator has not logged in yet")
        async with self._lock:
            if self._session is None or self._session_for is not info:
                if self._session is not None:
                    await self._session.close()
                auth = aiohttp.BasicAuth(info.username, info.password or "") if info.username else None
                connector = aiohttp.TCPConnector(ssl=_ssl_context(info), limit=20)
                self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, auth=auth)
                self._session_for = info
            return self._session, info


def _labels_match(obj: Mapping[str, Any], labels: Mapping[str, str] | None) -> bool:
    have = (obj.get("metadata") or {}).get("labels") or {}
    return all(have.get(k) == v for k, v in (labels or {}).items())


def _error(status: int, text: str) -> ApiError:
    try:
        doc = json.loads(text)
        reason, message = str(doc.get("reason") or ""), str(doc.get("message") or "")
    except ValueError:
        reason, message = "", text[:200]
    return _ERRORS.get(status, ApiError)(status, reason, message)


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if not info.server.startswith("https"):
        return False
    if info.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ca_data = _text(info.ca_data)
        ctx = ssl.create_default_context(cafile=_path(info.ca_path), cadata=ca_data)
    cert = _path(info.certificate_path) or _spill(info.certificate_data)
    key = _path(info.private_key_path) or _spill(info.private_key_data)
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def _path(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _text(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    raw = value if isinstance(value, bytes) else value.encode()
    # kubeconfigs carry certificate data base64-encoded; PEM passes through.
    return raw.decode() if raw.lstrip().startswith(b"-----") else base64.b64decode(raw).decode()


def _spill(value: str | bytes | None) -> str | None:
    text = _text(value)
    if text is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as f:
        f.write(text)
        return f.name
