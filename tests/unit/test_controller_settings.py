"""The operator's settings from the environment: the trial pod policy, and where its ports listen."""

from __future__ import annotations

import json

import pytest
from kubenas import podpolicy
from kubenas.controller.entrypoint import liveness_endpoint
from kubenas.controller.settings import TRIAL_POD_POLICY_ENV, Settings


def test_trial_pod_policy_defaults_to_restricted() -> None:
    assert Settings.from_env(env={}).trial_pod_policy == podpolicy.RESTRICTED
    assert Settings.from_env(env={TRIAL_POD_POLICY_ENV: ""}).trial_pod_policy == podpolicy.RESTRICTED


def test_trial_pod_policy_is_the_charts_value_as_json() -> None:
    value = {"default": "restricted", "namespaces": {"ml": {"level": "baseline", "serviceAccounts": ["reader"]}}}
    policies = Settings.from_env(env={TRIAL_POD_POLICY_ENV: json.dumps(value)}).trial_pod_policy
    ml = policies.for_namespace("ml")
    assert (ml.level, ml.service_accounts) == (podpolicy.Level.BASELINE, frozenset({"reader"}))
    assert policies.for_namespace("other").level == podpolicy.Level.RESTRICTED


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [("{not json", "KUBENAS_TRIAL_POD_POLICY: Expecting"), ('{"default": "open"}', "trialPodPolicy.default.level")],
    ids=["not-json", "bad-level"],
)
def test_a_bad_trial_pod_policy_stops_the_operator_naming_the_variable(raw: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        Settings.from_env(env={TRIAL_POD_POLICY_ENV: raw})


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://0.0.0.0:8080/healthz", "http://0.0.0.0:8080/healthz"),
        ("http://10.1.2.3:8080/healthz", "http://10.1.2.3:8080/healthz"),
        ("http://fd00::12:8080/healthz", "http://[fd00::12]:8080/healthz"),
        ("http://[fd00::12]:8080/healthz", "http://[fd00::12]:8080/healthz"),
        (None, None),
    ],
    ids=["any", "pod-ipv4", "pod-ipv6-bare", "pod-ipv6-bracketed", "off"],
)
def test_liveness_endpoint_brackets_a_bare_ipv6_pod_ip(given: str | None, expected: str | None) -> None:
    assert liveness_endpoint(given) == expected
