"""A parameter value holding ``$`` reaches the trial byte for byte by every route.

The kubelet expands ``$(VAR)`` and turns ``$$`` into ``$`` in env values, command and args (not in
downward-API files); the local runner expands nothing. ``kubelet_expand`` below follows the
kubelet's rules (k8s.io/kubernetes third_party/forked/golang/expansion): ``$$`` → ``$``;
``$(NAME)`` → NAME's value, or left as written when NAME is undefined; an unterminated ``$(``
and a ``$`` before any other character (or at the end) are kept. Env values are expanded in order,
each seeing the variables defined before it; command and args see the whole environment.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any

import pytest
from kubenas import api, workload


def kubelet_expand(text: str, variables: Mapping[str, str]) -> str:
    out: list[str] = []
    checkpoint = cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1 :]
            advance = 1
            if rest[0] == "$":
                out.append("$")
            elif rest[0] == "(":
                close = rest.find(")")
                if close < 0:
                    out.append("$(")
                else:
                    name = rest[1:close]
                    out.append(variables.get(name, f"$({name})"))
                    advance = close + 1
            else:
                out.append("$" + rest[0])
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


def kubelet_environment(container: Mapping[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in container.get("env") or []:
        env[entry["name"]] = kubelet_expand(entry["value"], env)
    return env


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(HOME)/x", "/root/x"),
        ("$$(HOME)", "$(HOME)"),
        ("$$$(HOME)", "$/root"),
        ("$(UNSET)", "$(UNSET)"),
        ("a$b", "a$b"),
        ("end$", "end$"),
        ("$(open", "$(open"),
        ("$$", "$"),
    ],
    ids=["var", "escaped-var", "dollar-then-var", "undefined-kept", "lone-dollar", "trailing", "unterminated", "pair"],
)
def test_the_kubelet_model_follows_the_documented_rules(text: str, expected: str) -> None:
    assert kubelet_expand(text, {"HOME": "/root"}) == expected


TRICKY = ["a$(HOME)$$b", "$", "$$", "$(", "x$$(HOME)", "end$", "$(HOME", "€$(KUBENAS_TRIAL)", "plain"]


def test_escaping_survives_the_kubelet() -> None:
    rng = random.Random(7)
    samples = [*TRICKY, *("".join(rng.choice("$()HOME$a") for _ in range(12)) for _ in range(500))]
    for text in samples:
        assert kubelet_expand(workload.kubelet_escape(text), {"HOME": "/root", "KUBENAS_TRIAL": "t"}) == text


def experiment() -> api.Experiment:
    container = {
        "name": "trial",
        "image": "trial:1",
        "env": [{"name": "HOME", "value": "/home/trial"}],
        "command": ["train", "${parameters.s}"],
        "args": ["--s=${parameters.s}", "--home=$(HOME)", "--n=${parameters.n}"],
    }
    spec = {
        "objective": {"metric": "accuracy", "goal": "maximize"},
        "parameters": [
            {"name": "s", "type": "categorical", "values": TRICKY},
            {"name": "n", "type": "int", "min": 1, "max": 9},
        ],
        "trialTemplate": {"spec": {"containers": [container]}},
    }
    return api.Experiment.model_validate({"metadata": {"name": "exp", "namespace": "ns", "uid": "u"}, "spec": spec})


def trial(value: str) -> api.Trial:
    return api.Trial.model_validate(
        {
            "metadata": {"name": "exp-0", "namespace": "ns", "uid": "t"},
            "spec": {"experiment": "exp", "index": 0, "parameters": {"s": value, "n": 3}},
        }
    )


@pytest.mark.parametrize("value", TRICKY)
def test_every_route_delivers_the_same_bytes(value: str) -> None:
    exp, run = experiment(), trial(value)
    job = workload.build_job(exp, run)
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = kubelet_environment(container)
    command = [kubelet_expand(a, env) for a in container["command"]]
    args = [kubelet_expand(a, env) for a in container["args"]]
    annotation = job["spec"]["template"]["metadata"]["annotations"][workload.ANNOTATION_PARAMETERS]

    template = exp.spec.trial_template.spec["containers"][0]
    params = run.spec.parameters
    local_env = workload.trial_environment("exp", "exp-0", params, 8000)  # as the local runner does
    local_args = workload.substitute_args(template["args"], params)

    routes = {
        "env": json.loads(env["KUBENAS_PARAMETERS"])["s"],
        "downward-api file": json.loads(annotation)["s"],  # the kubelet copies the annotation verbatim
        "command": command[1],
        "args": args[0].removeprefix("--s="),
        "local env": json.loads(local_env["KUBENAS_PARAMETERS"])["s"],
        "local file": json.loads(workload.parameters_json(params))["s"],
        "local args": local_args[0].removeprefix("--s="),
    }
    assert routes == dict.fromkeys(routes, value)
    assert args[1:] == ["--home=/home/trial", "--n=3"]  # the template's own references still work
