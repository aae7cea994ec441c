"""Valid Experiment manifests and the table of invalid ones built from them.

Each invalid case patches one valid manifest (``{"spec.parameters[0].max": 1e-5}``; ``DELETE``
removes a field) and says where the problem must be reported and with which words.
``apiserver=False`` marks what only the operator can check (``kubenas validate`` does).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

DELETE = object()


def _container(*args: str) -> dict[str, Any]:
    return {"name": "trial", "image": "ghcr.io/kubenas/trial:0.1.0", "args": list(args)}


SINGLE = {
    "apiVersion": "kubenas.io/v1alpha1",
    "kind": "Experiment",
    "metadata": {"name": "digits-cnn", "namespace": "ml"},
    "spec": {
        "objective": {"metric": "accuracy", "goal": "maximize", "additionalMetrics": ["loss"]},
        "parameters": [
            {"name": "lr", "type": "float", "min": 1e-4, "max": 1e-1, "scale": "log"},
            {"name": "act", "type": "categorical", "values": ["relu", "gelu", "silu"]},
            {"name": "depth", "type": "int", "min": 1, "max": 4, "when": {"act": ["relu", "gelu"]}},
        ],
        "algorithm": {"name": "NGOpt", "seed": 7},
        "budget": {"maxTrials": 12, "parallelTrials": 3, "maxDuration": "1h30m"},
        "earlyStopping": {"rule": "median", "metric": "loss", "goal": "minimize", "minEpochs": 2},
        "trialTemplate": {"spec": {"containers": [_container("--lr=${parameters.lr}")], "restartPolicy": "Never"}},
    },
}

PARETO = {
    "apiVersion": "kubenas.io/v1alpha1",
    "kind": "Experiment",
    "metadata": {"name": "tiny-nas"},
    "spec": {
        "objective": {
            "metrics": [{"name": "accuracy", "goal": "maximize"}, {"name": "latency_ms", "goal": "minimize"}],
            "strategy": "pareto",
            "constraints": [{"metric": "params", "max": 2e5}, {"metric": "latency_ms", "min": 0, "max": 5}],
        },
        "parameters": [
            {"name": "width", "type": "categorical", "values": [16, 32, 64]},
            {"name": "skip", "type": "categorical", "values": [True, False]},
            {"name": "dropout", "type": "float", "min": 0, "max": 0.5},
        ],
        "trialTemplate": {
            "metadata": {"labels": {"team": "vision"}},
            "spec": {
                "initContainers": [{"name": "fetch", "image": "busybox:1.36", "command": ["true"]}],
                "containers": [{"name": "trial", "image": "ghcr.io/kubenas/trial:0.1.0"}],
            },
            "activeDeadlineSeconds": 600,
        },
        "metrics": {"port": 9000, "source": "direct"},
    },
}

WEIGHTED = {
    "apiVersion": "kubenas.io/v1alpha1",
    "kind": "Experiment",
    "metadata": {"name": "compress"},
    "spec": {
        "objective": {
            "metrics": [
                {"name": "accuracy", "goal": "maximize", "weight": 1.0},
                {"name": "size_mb", "goal": "minimize", "weight": 0.05},
            ],
            "strategy": "weighted",
            "targetValue": 0.9,
        },
        "parameters": [
            {"name": "prune", "type": "float", "min": 0, "max": 0.9},
            {"name": "quantize", "type": "categorical", "values": ["none", "int8"]},
            {"name": "bits", "type": "int", "min": 4, "max": 8, "when": {"quantize": ["int8"]}},
        ],
        "algorithm": {"name": "TwoPointsDE"},
        "budget": {"maxTrials": 40, "parallelTrials": 4, "maxFailedTrials": 5},
        "earlyStopping": {"rule": "asha", "reductionFactor": 3},
        "trialTemplate": {"spec": {"containers": [_container("--prune", "${parameters.prune}")]}},
        "export": {"configMap": True},
        "suspend": False,
    },
}

VALID = {"single": SINGLE, "pareto": PARETO, "weighted": WEIGHTED}


def patched(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with each dotted path set to its value (or removed, for DELETE)."""
    doc = copy.deepcopy(base)
    for path, value in patch.items():
        parts: list[str | int] = [int(i) if i else name for name, i in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path)]
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[part]
        if value is DELETE:
            del parent[parts[-1]]
        elif isinstance(parent, list) and parts[-1] == len(parent):
            parent.append(copy.deepcopy(value))
        else:
            parent[parts[-1]] = copy.deepcopy(value)
    return doc


@dataclass(frozen=True)
class Case:
    """One invalid manifest and how it must be refused.

    Attributes:
        id: readable test id.
        patch: dotted field path → value (``DELETE`` removes it), applied to ``VALID[base]``.
        path: the field ``kubenas validate`` names.
        words: words its message must contain (case-insensitive).
        base: which valid manifest to patch.
        apiserver: whether the CRD schema + CEL refuse it too.
        api_path: where the API server reports it, when that is coarser (CEL fieldPath is static).
        api_words: the API server's words, when its wording differs (schema errors).
    """

    id: str
    patch: dict[str, Any]
    path: str
    words: tuple[str, ...]
    base: str = "single"
    apiserver: bool = True
    api_path: str | None = None
    api_words: tuple[str, ...] | None = None

    def manifest(self) -> dict[str, Any]:
        return patched(VALID[self.base], self.patch)


PARAMS = "spec.parameters"
OBJ = "spec.objective"
TOO_MANY = [{"name": f"p{i}", "type": "float", "min": 0, "max": 1} for i in range(65)]

CASES = [
    # --- parameters
    Case("min-not-below-max", {f"{PARAMS}[0].max": 1e-5}, f"{PARAMS}[0].max", ("min must be less than max",)),
    Case("int-min-equals-max", {f"{PARAMS}[2].max": 1}, f"{PARAMS}[2].max", ("min must be less than max",)),
    Case("log-scale-zero-min", {f"{PARAMS}[0].min": 0}, f"{PARAMS}[0].min", ("log scale needs min > 0",)),
    Case("log-scale-negative-min", {f"{PARAMS}[0].min": -1}, f"{PARAMS}[0].min", ("log scale needs min > 0",)),
    Case("float-without-max", {f"{PARAMS}[0].max": DELETE}, f"{PARAMS}[0].max", ("int and float parameters need max",)),
    Case("int-without-min", {f"{PARAMS}[2].min": DELETE}, f"{PARAMS}[2].min", ("int and float parameters need min",)),
    Case(
        "int-fractional-bound",
        {f"{PARAMS}[2].min": 1.5},
        f"{PARAMS}[2].min",
        ("whole-number",),
        api_path=f"{PARAMS}[2]",
    ),
    Case("parameter-bound-too-large", {f"{PARAMS}[0].max": 1e300}, f"{PARAMS}[0].max", ("less than or equal to",)),
    Case("parameter-bound-too-small", {f"{PARAMS}[2].min": -1e16}, f"{PARAMS}[2].min", ("greater than or equal to",)),
    # values and when are schemaless (no CEL type), so only the model checks the rules about them
    Case(
        "categorical-without-values",
        {f"{PARAMS}[1].values": DELETE},
        f"{PARAMS}[1].values",
        ("need values",),
        apiserver=False,
    ),
    Case("categorical-empty-values", {f"{PARAMS}[1].values": []}, f"{PARAMS}[1].values", ("at least 1 item",)),
    Case(
        "categorical-with-min",
        {f"{PARAMS}[1].min": 0},
        f"{PARAMS}[1].min",
        ("take values, not min or max",),
        api_path=f"{PARAMS}[1]",
    ),
    Case(
        "float-with-values",
        {f"{PARAMS}[0].values": [0.1, 0.2]},
        f"{PARAMS}[0].values",
        ("only categorical",),
        apiserver=False,
    ),
    Case(
        "duplicate-categorical-values",
        {f"{PARAMS}[1].values[3]": "relu"},
        f"{PARAMS}[1].values[3]",
        ("values must be distinct",),
        apiserver=False,
    ),
    Case(
        "when-names-itself",
        {f"{PARAMS}[2].when": {"depth": [1]}},
        f"{PARAMS}[2].when.depth",
        ("not the parameter itself",),
        apiserver=False,
    ),
    Case(
        "when-names-unknown-parameter",
        {f"{PARAMS}[2].when": {"activation": ["relu"]}},
        f"{PARAMS}[2].when.activation",
        ("another parameter of this experiment",),
        apiserver=False,
    ),
    Case("when-without-values", {f"{PARAMS}[2].when": {"act": []}}, f"{PARAMS}[2].when.act", ("at least 1 item",)),
    Case(
        "duplicate-parameter-names",
        {f"{PARAMS}[1].name": "lr"},
        f"{PARAMS}[1].name",
        ("names must be unique",),
        api_path=PARAMS,
    ),
    Case("unknown-parameter-type", {f"{PARAMS}[0].type": "bool"}, f"{PARAMS}[0].type", ("int", "float", "categorical")),
    Case("unknown-scale", {f"{PARAMS}[0].scale": "exp"}, f"{PARAMS}[0].scale", ("linear", "log")),
    Case("parameter-name-pattern", {f"{PARAMS}[0].name": "1lr"}, f"{PARAMS}[0].name", ("should match",)),
    Case("too-many-parameters", {PARAMS: TOO_MANY}, PARAMS, ("at most 64 items",)),
    Case("no-parameters", {PARAMS: []}, PARAMS, ("at least 1 item",)),
    Case(
        "parameter-value-not-scalar",
        {f"{PARAMS}[1].values[0]": {"a": 1}},
        f"{PARAMS}[1].values[0]",
        ("boolean", "string"),
        apiserver=False,
    ),
    # --- objective
    Case("metric-and-metrics", {f"{OBJ}.metrics": [{"name": "loss", "goal": "minimize"}]}, OBJ, ("exactly one",)),
    Case("neither-metric-nor-metrics", {f"{OBJ}.metric": DELETE, f"{OBJ}.goal": DELETE}, OBJ, ("exactly one",)),
    Case("metric-without-goal", {f"{OBJ}.goal": DELETE}, f"{OBJ}.goal", ("goal is required",)),
    Case("unknown-goal", {f"{OBJ}.goal": "max"}, f"{OBJ}.goal", ("maximize", "minimize")),
    Case("goal-with-metrics", {f"{OBJ}.goal": "maximize"}, f"{OBJ}.goal", ("each entry of metrics",), base="pareto"),
    Case(
        "duplicate-objective-metrics",
        {f"{OBJ}.metrics[1].name": "accuracy"},
        f"{OBJ}.metrics[1].name",
        ("metrics must be distinct",),
        base="pareto",
        api_path=f"{OBJ}.metrics",
    ),
    Case(
        "two-metrics-without-strategy",
        {f"{OBJ}.strategy": DELETE},
        f"{OBJ}.strategy",
        ("strategy", "required"),
        base="pareto",
    ),
    Case(
        "strategy-with-single-metric",
        {f"{OBJ}.strategy": "pareto"},
        f"{OBJ}.strategy",
        ("applies only to objective.metrics",),
    ),
    Case(
        "weight-without-weighted",
        {f"{OBJ}.metrics[0].weight": 2.0},
        f"{OBJ}.metrics[0].weight",
        ("only allowed with strategy weighted",),
        base="pareto",
        api_path=f"{OBJ}.metrics",
    ),
    Case(
        "weighted-without-weight",
        {f"{OBJ}.metrics[1].weight": DELETE},
        f"{OBJ}.metrics[1].weight",
        ("needs a weight on every metric",),
        base="weighted",
        api_path=f"{OBJ}.metrics",
    ),
    Case("target-with-pareto", {f"{OBJ}.targetValue": 0.9}, f"{OBJ}.targetValue", ("pareto",), base="pareto"),
    Case(
        "constraint-without-bounds",
        {f"{OBJ}.constraints[0]": {"metric": "params"}},
        f"{OBJ}.constraints[0]",
        ("needs min or max",),
        base="pareto",
    ),
    Case(
        "constraint-min-above-max",
        {f"{OBJ}.constraints[1].min": 10},
        f"{OBJ}.constraints[1].max",
        ("min must not be greater than max",),
        base="pareto",
    ),
    Case(
        "stop-early-on-an-objective-metric",
        {f"{OBJ}.constraints[1].stopEarly": True},
        f"{OBJ}.constraints[1].stopEarly",
        ("objective metric", "params or flops"),
        base="pareto",
        api_path=f"{OBJ}.constraints",
    ),
    # --- budget, early stopping
    Case("parallel-above-max", {"spec.budget.parallelTrials": 13}, "spec.budget.parallelTrials", ("maxTrials",)),
    Case(
        "parallel-above-default-max",
        {"spec.budget": {"parallelTrials": 25}},
        "spec.budget.parallelTrials",
        ("must not be greater than maxTrials",),
    ),
    Case("zero-max-trials", {"spec.budget.maxTrials": 0}, "spec.budget.maxTrials", ("greater than or equal to 1",)),
    Case("max-trials-not-a-number", {"spec.budget.maxTrials": "ten"}, "spec.budget.maxTrials", ("integer",)),
    Case("bad-duration", {"spec.budget.maxDuration": "2 hours"}, "spec.budget.maxDuration", ("should match",)),
    Case(
        "stopping-metric-not-reported",
        {"spec.earlyStopping.metric": "val_acc"},
        "spec.earlyStopping.metric",
        ("objective metric or one of objective.additionalMetrics",),
    ),
    Case(
        "stopping-metric-without-goal",
        {"spec.earlyStopping.goal": DELETE},
        "spec.earlyStopping.goal",
        ("earlyStopping.goal is required",),
    ),
    Case(
        "unknown-stopping-rule", {"spec.earlyStopping.rule": "hyperband"}, "spec.earlyStopping.rule", ("median", "asha")
    ),
    # --- trial template, metrics, metadata, shape
    Case(
        "no-containers",
        {"spec.trialTemplate.spec.containers": []},
        "spec.trialTemplate.spec.containers",
        ("at least one container",),
        api_path="spec.trialTemplate.spec",
    ),
    Case(
        "container-without-image",
        {"spec.trialTemplate.spec.containers[0].image": DELETE},
        "spec.trialTemplate.spec.containers[0].image",
        ("needs an image",),
    ),
    Case(
        "init-container-with-empty-image",
        {"spec.trialTemplate.spec.initContainers[0].image": ""},
        "spec.trialTemplate.spec.initContainers[0].image",
        ("needs an image",),
        base="pareto",
    ),
    Case(
        "container-name-too-long",
        {"spec.trialTemplate.spec.containers[0].name": "t" * 64},
        "spec.trialTemplate.spec.containers[0].name",
        ("at most 63 characters",),
        api_words=("may not be more than 63",),
    ),
    Case("no-trial-template", {"spec.trialTemplate": DELETE}, "spec.trialTemplate", ("required",)),
    Case(
        "backoff-limit-too-high",
        {"spec.trialTemplate.backoffLimit": 11},
        "spec.trialTemplate.backoffLimit",
        ("less than or equal to 10",),
    ),
    Case(
        "replicas-too-many",
        {"spec.trialTemplate.replicas": 65},
        "spec.trialTemplate.replicas",
        ("less than or equal to 64",),
    ),
    Case(
        "replicas-with-retries",
        {"spec.trialTemplate.replicas": 2, "spec.trialTemplate.backoffLimit": 1},
        "spec.trialTemplate.backoffLimit",
        ("backoffLimit must be 0 when replicas is more than 1",),
    ),
    Case(
        "metrics-port-out-of-range",
        {"spec.metrics.port": 70000},
        "spec.metrics.port",
        ("less than or equal to 65535",),
        base="pareto",
    ),
    Case("name-too-long", {"metadata.name": "x" * 57}, "metadata.name", ("at most 56 characters",)),
    Case("name-not-dns-label", {"metadata.name": "Digits_CNN"}, "metadata.name", ("DNS-1123",)),
    Case("unknown-spec-field", {"spec.budjet": {"maxTrials": 5}}, "spec.budjet", ("unknown field",)),
    Case("unknown-parameter-field", {f"{PARAMS}[0].step": 0.1}, f"{PARAMS}[0].step", ("unknown field",)),
    Case("queue-name-not-a-name", {"spec.queueName": "GPU_Queue"}, "spec.queueName", ("should match",)),
    # --- staged experiments
    Case(
        "gradient-search-objective-not-accuracy",
        {"spec.gradientSearch": {}, f"{OBJ}.metric": "loss", f"{OBJ}.goal": "minimize"},
        OBJ,
        ("with gradientSearch the objective is accuracy (maximize)",),
    ),
    Case(
        "gradient-search-pareto-objective",
        {"spec.gradientSearch": {}},
        OBJ,
        ("with gradientSearch the objective is accuracy (maximize) without constraints",),
        base="pareto",
    ),
    Case(
        "gradient-search-and-one-shot",
        {"spec.gradientSearch": {}, "spec.oneShot": {}},
        "spec.gradientSearch",
        ("set oneShot or gradientSearch, not both",),
    ),
    Case(
        "gradient-search-top-k-too-large",
        {"spec.gradientSearch": {"topK": 9}},
        "spec.gradientSearch.topK",
        ("less than or equal to 8",),
    ),
    # --- only the operator can check these
    Case(
        "queue-name-disagrees-with-template-label",
        {"spec.queueName": "gpu", "spec.trialTemplate.metadata": {"labels": {"kueue.x-k8s.io/queue-name": "cpu"}}},
        "spec.queueName",
        ("name different queues",),
        apiserver=False,
    ),
    Case(
        "gradient-search-searches-the-cell",
        {"spec.gradientSearch": {}, f"{PARAMS}[0].name": "cell", "spec.trialTemplate.spec.containers[0].args": []},
        f"{PARAMS}[0].name",
        ("mode, cell are set by the gradient-search stages",),
        apiserver=False,
    ),
    Case(
        "gradient-search-retrain-with-search-setting",
        {"spec.gradientSearch": {"retrain": {"arch_lr": 0.01}}},
        "spec.gradientSearch.retrain.arch_lr",
        ("apply only to the search trials",),
        apiserver=False,
    ),
    Case(
        "gradient-search-extra-is-searched",
        {"spec.gradientSearch": {"search": {"lr": 0.01}}},
        "spec.gradientSearch.search.lr",
        ("a searched parameter is set by the search",),
        apiserver=False,
    ),
    Case(
        "unknown-algorithm",
        {"spec.algorithm.name": "NGOptt"},
        "spec.algorithm.name",
        ("unknown algorithm", "NGOpt"),
        apiserver=False,
    ),
    Case(
        "substitution-names-no-parameter",
        {"spec.trialTemplate.spec.containers[0].args": ["--lr=${parameters.learning_rate}"]},
        "spec.trialTemplate.spec.containers[0].args[0]",
        ("${parameters.learning_rate}", "names no parameter"),
        apiserver=False,
    ),
    Case(
        "when-cycle",
        {f"{PARAMS}[1].when": {"depth": [2]}},
        f"{PARAMS}[1].when",
        ("cycle", "act → depth → act"),
        apiserver=False,
    ),
    Case(
        "when-value-parameter-cannot-take",
        {f"{PARAMS}[2].when": {"act": ["tanh"]}},
        f"{PARAMS}[2].when.act[0]",
        ("'tanh'", "cannot take"),
        apiserver=False,
    ),
    Case(
        "when-value-outside-range",
        {f"{PARAMS}[1].when": {"lr": [1.0]}},
        f"{PARAMS}[1].when.lr[0]",
        ("cannot take",),
        apiserver=False,
    ),
    Case(
        "pod-template-unknown-field",
        {"spec.trialTemplate.spec.containers[0].imagePullPolcy": "Always"},
        "spec.trialTemplate.spec.containers[0]",
        ("unknown field", "imagePullPolcy"),
        apiserver=False,
    ),
    Case(
        "container-without-name",
        {"spec.trialTemplate.spec.containers[0].name": DELETE},
        "spec.trialTemplate.spec.containers[0]",
        ("'name' is a required property",),
        apiserver=False,
    ),
    Case(
        "pod-template-wrong-type",
        {"spec.trialTemplate.spec.restartPolicy": 3},
        "spec.trialTemplate.spec.restartPolicy",
        ("not of type 'string'",),
        apiserver=False,
    ),
]
