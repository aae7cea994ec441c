"""Plain JSON over HTTP to the API server, with the credentials of a kubeconfig.

The official ``kubernetes`` client loads the kubeconfig (certificates, tokens, exec plugins,
``$KUBECONFIG`` lists); requests are plain urllib3 calls on raw JSON, so the e2e suite and its
test kubelet see exactly what the API server sends.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import kubernetes
import urllib3


class ApiError(Exception):
    """An HTTP error answer: ``status`` (404, 409, 422, …), the Status ``reason`` and ``message``."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


def path(api_version: str, plural: str, namespace: str | None = None, name: str | None = None, sub: str = "") -> str:
    """``/api/v1/namespaces/ns/pods/name/status`` from its parts (``api_version`` "v1" or "group/version")."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    parts = [base]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(plural)
    if name:
        parts.append(name)
    if sub:
        parts.append(sub)
    return "/".join(parts)


class Kube:
    """A small synchronous client: get, list, create, merge-patch, delete and watch raw objects."""

    def __init__(self, kubeconfig: str | None = None, *, timeout: float = 30.0) -> None:
        cfg = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        self.cfg = cfg
        self.host = cfg.host.rstrip("/")
        self.timeout = timeout
        tls: dict[str, Any] = {}
        if self.host.startswith("https"):
            tls = {
                "cert_reqs": "CERT_REQUIRED" if cfg.verify_ssl else "CERT_NONE",
                "ca_certs": cfg.ssl_ca_cert,
                "cert_file": cfg.cert_file,
                "key_file": cfg.key_file,
            }
            if getattr(cfg, "tls_server_name", None):
                tls["server_hostname"] = cfg.tls_server_name
            if not cfg.verify_ssl:
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.pool = urllib3.PoolManager(maxsize=16, **tls)

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "kubenas-e2e"}
        if content_type:
            headers["Content-Type"] = content_type
        token = self.cfg.get_api_key_with_prefix("BearerToken", alias="authorization")
        if token:
            headers["Authorization"] = token
        elif self.cfg.username:
            headers.update(urllib3.make_headers(basic_auth=f"{self.cfg.username}:{self.cfg.password}"))
        return headers

    def request(
        self,
        method: str,
        url_path: str,
        body: Any = None,
        *,
        params: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Any:
        """One request; the decoded JSON answer, or ApiError for a status ≥ 400."""
        url = self.host + url_path
        if params:
            url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        data = None if body is None else json.dumps(body).encode()
        resp = self.pool.request(
            method,
            url,
            body=data,
            headers=self._headers(content_type if data is not None else None),
            timeout=urllib3.Timeout(total=timeout or self.timeout),
            retries=False,
        )
        text = resp.data.decode("utf-8", "replace")
        if resp.status >= 400:
            raise _error(resp.status, text)
        return json.loads(text) if text.strip().startswith(("{", "[")) else text

    def get(self, url_path: str, **params: Any) -> Any:
        return self.request("GET", url_path, params=params)

    def get_or_none(self, url_path: str) -> dict[str, Any] | None:
        try:
            return self.get(url_path)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def items(self, url_path: str, **params: Any) -> list[dict[str, Any]]:
        return list(self.get(url_path, **params).get("items") or [])

    def create(self, url_path: str, body: Any) -> Any:
        return self.request("POST", url_path, body)

    def patch(self, url_path: str, body: Any) -> Any:
        """A JSON merge patch."""
        return self.request("PATCH", url_path, body, content_type="application/merge-patch+json")

    def delete(self, url_path: str, body: Any = None, *, missing_ok: bool = True) -> Any:
        try:
            return self.request("DELETE", url_path, body)
        except ApiError as err:
            if missing_ok and err.status == 404:
                return None
            raise

    def watch(self, url_path: str, resource_version: str, timeout_seconds: int = 60) -> Iterator[dict[str, Any]]:
        """Watch events (``{"type": ..., "object": ...}``) from ``resource_version`` until the server ends it.

        An ERROR event (410 Gone: the version is too old) is raised as ApiError.
        """
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        sep = "&" if "?" in url_path else "?"
        url = f"{self.host}{url_path}{sep}{urllib.parse.urlencode(params)}"
        resp = self.pool.request(
            "GET",
            url,
            headers=self._headers(None),
            preload_content=False,
            timeout=urllib3.Timeout(connect=10, read=timeout_seconds + 15),
            retries=False,
        )
        try:
            if resp.status >= 400:
                raise _error(resp.status, resp.read().decode("utf-8", "replace"))
            buffer = b""
            for chunk in resp.stream(65536):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        st = event.get("object") or {}
                        raise ApiError(int(st.get("code") or 500), st.get("reason", ""), st.get("message", ""))
                    yield event
        finally:
            resp.release_conn()

    def ready(self, timeout: float = 5.0) -> str | None:
        """None when ``/readyz`` answers ok, else why not."""
        try:
            answer = self.request("GET", "/readyz", timeout=timeout)
        except Exception as err:
            return f"{type(err).__name__}: {err}"
        return None if str(answer).strip() == "ok" else f"/readyz answered {str(answer)[:200]!r}"


def _error(status: int, text: str) -> ApiError:
    try:
        doc = json.loads(text)
        return ApiError(status, str(doc.get("reason") or ""), str(doc.get("message") or text[:500]))
    except ValueError:
        return ApiError(status, "", text[:500])


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def now_micro() -> str:
    """RFC 3339 with microseconds, as Lease renewTime (MicroTime) wants."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e6):06d}Z"
