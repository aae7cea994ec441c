"""Reading an Experiment, its Trials and its export from a cluster, for ``kubenas status|report|export``.

The official ``kubernetes`` client, synchronous (one command, a few requests), configured as
kubectl is: ``--kubeconfig`` or ``$KUBECONFIG`` (several files joined by ``:``) or
``~/.kube/config``, its current context unless ``--context`` names another, that context's
namespace unless ``-n`` names one, and the pod's service account when run inside a cluster
with no kubeconfig. Every failure is a :class:`ClusterError` holding one line a user can act
on: no kubeconfig, an unknown context, an unreachable server, refused credentials, the CRDs
not installed, access denied (RBAC), the experiment not found.

Rendering is not done here: the objects come back as the API models (``api.Experiment``,
``api.Trial``), the same ones a local run records, so one set of views serves both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from kubenas import api, workload

DEFAULT_KUBECONFIG = "~/.kube/config"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REQUEST_TIMEOUT = 15.0
PAGE_SIZE = 500
EXPERIMENTS = f"experiments.{api.GROUP}"


class ClusterError(RuntimeError):
    """Why the cluster could not be read, in one line (kubectl's wording where kubectl has one)."""


class NotFoundError(ClusterError):
    """The object does not exist (its resource type is served)."""


@dataclass(frozen=True)
class ExperimentObjects:
    """An Experiment as the cluster holds it.

    Attributes:
        namespace: where it lives.
        raw: the Experiment object as served.
        experiment: the parsed Experiment, or None when its spec does not parse (``problem`` says why).
        trials: its Trials (label ``kubenas.io/experiment``), by index; objects that do not parse are left out.
        export: the data of its ``<name>-best`` ConfigMap, or None when there is none (not finished yet).
        unreadable: names of Trial objects that did not parse.
    """

    namespace: str
    raw: Mapping[str, Any]
    experiment: api.Experiment | None
    problem: str | None = None
    trials: list[api.Trial] = field(default_factory=list)
    export: Mapping[str, str] | None = None
    unreadable: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str((self.raw.get("metadata") or {}).get("name") or "")

    @property
    def status(self) -> api.ExperimentStatus | None:
        """The Experiment's status, or None before the operator wrote one (or when it does not parse)."""
        if self.experiment is not None:
            return self.experiment.status
        try:
            return api.ExperimentStatus.model_validate(self.raw.get("status") or {}) if self.raw.get("status") else None
        except ValueError:
            return None


class Cluster:
    """A connection to one cluster and namespace, as a kubeconfig context describes them.

    Args:
        kubeconfig: a kubeconfig path (``--kubeconfig``); default ``$KUBECONFIG`` or ``~/.kube/config``.
        context: a context name (``--context``); default the current context.
        namespace: a namespace (``-n``); default the context's, else ``default``.

    Raises:
        ClusterError: no kubeconfig, an unknown context, or an unusable configuration.
    """

    def __init__(self, kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None) -> None:
        self.api_client, context_namespace = _connect(kubeconfig, context)
        self.namespace = namespace or context_namespace or "default"
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    def close(self) -> None:
        self.api_client.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def read(self, name: str, *, export: bool = False) -> ExperimentObjects:
        """The Experiment ``name``, its Trials and, with ``export``, its export ConfigMap.

        Raises:
            ClusterError: the CRDs are not installed, access is denied, it does not exist, or
                the server cannot be reached.
        """
        raw = self._call(
            lambda: self.custom.get_namespaced_custom_object(
                api.GROUP, api.VERSION, self.namespace, "experiments", name, _request_timeout=REQUEST_TIMEOUT
            ),
            what=f'{EXPERIMENTS} "{name}"',
        )
        try:
            experiment: api.Experiment | None = api.Experiment.model_validate(raw)
            problem = None
        except ValueError as exc:
            experiment, problem = None, " ".join(str(exc).split())[:300]
        trials, unreadable = [], []
        for item in self._trial_items(name):
            try:
                trials.append(api.Trial.model_validate(item))
            except ValueError:
                unreadable.append(str((item.get("metadata") or {}).get("name")))
        trials.sort(key=lambda t: t.spec.index)
        data = self._export_data(name) if export else None
        return ExperimentObjects(self.namespace, raw, experiment, problem, trials, data, unreadable)

    # ------------------------------------------------------------------ requests

    def _trial_items(self, experiment: str) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            page = self._call(
                lambda token=token: self.custom.list_namespaced_custom_object(
                    api.GROUP,
                    api.VERSION,
                    self.namespace,
                    "trials",
                    label_selector=f"{workload.LABEL_EXPERIMENT}={experiment}",
                    limit=PAGE_SIZE,
                    _continue=token,
                    _request_timeout=REQUEST_TIMEOUT,
                ),
                what=f"trials.{api.GROUP}",
            )
            yield from page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    def _export_data(self, experiment: str) -> Mapping[str, str] | None:
        name = f"{experiment}-best"
        try:
            cm = self._call(
                lambda: self.core.read_namespaced_config_map(name, self.namespace, _request_timeout=REQUEST_TIMEOUT),
                what=f'configmaps "{name}"',
            )
        except NotFoundError:
            return None
        return dict(cm.data or {})

    def _call(self, request: Any, what: str) -> Any:
        try:
            return request()
        except ApiException as exc:
            raise self._explain(exc, what) from None
        except urllib3.exceptions.HTTPError as exc:
            host = self.api_client.configuration.host
            raise ClusterError(f"Unable to connect to the server {host}: {_reason(exc)}") from None

    def _explain(self, exc: ApiException, what: str) -> ClusterError:
        message = _server_message(exc)
        if exc.status == 404:
            if what.startswith(("trials", EXPERIMENTS)) and not self._served("experiments"):
                return ClusterError(
                    f'the server doesn\'t have a resource type "{EXPERIMENTS}": are the kubenas CRDs installed? '
                    "(kubectl apply -f crds/, or the Helm chart)"
                )
            return NotFoundError(f'Error from server (NotFound): {what} not found in namespace "{self.namespace}"')
        if exc.status == 403:
            return ClusterError(f"Error from server (Forbidden): {message}")
        if exc.status == 401:
            return ClusterError("You must be logged in to the server (Unauthorized): check the context's credentials")
        return ClusterError(f"Error from server ({exc.reason or exc.status}): {message}")

    def _served(self, plural: str) -> bool:
        """Whether the API server serves ``plural`` in kubenas.io/v1alpha1 (the CRD is installed)."""
        try:
            served = self.custom.get_api_resources(api.GROUP, api.VERSION, _request_timeout=REQUEST_TIMEOUT)
        except (ApiException, urllib3.exceptions.HTTPError):
            return False
        return any(r.name == plural for r in served.resources or [])


def _connect(kubeconfig: str | None, context: str | None) -> tuple[client.ApiClient, str | None]:
    """An API client and the namespace of the chosen context (None in-cluster without one)."""
    path = kubeconfig or os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    files = [os.path.expanduser(p) for p in path.split(os.pathsep) if p]
    if not any(os.path.isfile(f) for f in files):
        if kubeconfig is None and context is None and _in_cluster():
            config.load_incluster_config()
            namespace = (SERVICE_ACCOUNT / "namespace").read_text().strip() or None
            return client.ApiClient(), namespace
        shown = ", ".join(files) or DEFAULT_KUBECONFIG
        raise ClusterError(f"no kubeconfig found ({shown}): pass --kubeconfig or set KUBECONFIG")
    try:
        contexts, current = config.list_kube_config_contexts(config_file=path)
    except (ConfigException, OSError, ValueError) as exc:
        raise ClusterError(f"cannot read the kubeconfig {path}: {_reason(exc)}") from None
    chosen = current if context is None else next((c for c in contexts or [] if c.get("name") == context), None)
    if chosen is None:
        if context is not None:
            raise ClusterError(f'context "{context}" does not exist in {path}')
        raise ClusterError(f"the kubeconfig {path} has no current context: pass --context")
    configuration = client.Configuration()
    try:
        config.load_kube_config(
            config_file=path, context=chosen["name"], client_configuration=configuration, persist_config=False
        )
    except (ConfigException, OSError, ValueError) as exc:
        raise ClusterError(f"cannot use context {chosen['name']!r} of {path}: {_reason(exc)}") from None
    configuration.retries = 1  # fail fast on an unreachable server, as kubectl does
    namespace = (chosen.get("context") or {}).get("namespace")
    return client.ApiClient(configuration), namespace


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (SERVICE_ACCOUNT / "token").is_file()


def _server_message(exc: ApiException) -> str:
    """The message of the server's Status object, else its reason."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return " ".join(str(body["message"]).split())
    return str(exc.reason or exc.status)


def _reason(exc: BaseException) -> str:
    """The innermost cause of a connection or configuration error, on one line."""
    reason = getattr(exc, "reason", None) or exc
    return " ".join(str(reason).split())[:300]
