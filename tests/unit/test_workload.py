"""kubenas.workload: the pure Trial → Job builder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubenas import api, podpolicy, workload


def make_experiment(**template: Any) -> api.Experiment:
    spec = {
        "objective": {"metric": "accuracy", "goal": "maximize"},
        "parameters": [{"name": "lr", "type": "float", "min": 0.001, "max": 0.1, "scale": "log"}],
        "trialTemplate": {
            "spec": {
                "containers": [
                    {
                        "name": "trial",
                        "image": "ghcr.io/kubenas/trial:0.1",
                        "args": ["--lr=${parameters.lr}", "--width", "${parameters.width}", "$${parameters.lr}"],
                        "env": [{"name": "KUBENAS_TRIAL", "value": "spoofed"}, {"name": "USER_VAR", "value": "1"}],
                        "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    }
                ]
            },
            **template,
        },
    }
    return api.Experiment.model_validate(
        {"metadata": {"name": "exp", "namespace": "ns", "uid": "exp-uid"}, "spec": spec}
    )


def make_trial(parameters: dict[str, Any] | None = None) -> api.Trial:
    return api.Trial.model_validate(
        {
            "metadata": {"name": "exp-3", "namespace": "ns", "uid": "trial-uid"},
            "spec": {"experiment": "exp", "index": 3, "parameters": parameters or {"lr": 0.01, "width": 64}},
        }
    )


@pytest.mark.parametrize(
    ("args", "params", "expected"),
    [
        (["--lr=${parameters.lr}"], {"lr": 0.5}, ["--lr=0.5"]),
        (["${parameters.a}x${parameters.b}"], {"a": 1, "b": "y"}, ["1xy"]),
        (["${parameters.flag}"], {"flag": True}, ["true"]),
        (["${parameters.gone}"], {}, [""]),
        (["$${parameters.lr}"], {"lr": 1}, ["${parameters.lr}"]),
        (["${parameters.s}"], {"s": "a b; rm -rf /"}, ["a b; rm -rf /"]),
        (["plain", "${other}"], {"other": 1}, ["plain", "${other}"]),
    ],
    ids=["inline", "two-in-one", "bool-json", "inactive-empty", "escaped", "no-shell-split", "untouched"],
)
def test_substitute_args(args: list[str], params: dict[str, Any], expected: list[str]) -> None:
    assert workload.substitute_args(args, params) == expected


def test_trial_environment_is_the_contract() -> None:
    env = workload.trial_environment("exp", "exp-0", {"b": 2, "a": "x"}, 9000)
    assert env == {
        "KUBENAS_PARAMETERS": '{"a":"x","b":2}',
        "KUBENAS_TRIAL": "exp-0",
        "KUBENAS_EXPERIMENT": "exp",
        "KUBENAS_METRICS_PORT": "9000",
    }


def test_job_identity_labels_and_owner() -> None:
    job = workload.build_job(make_experiment(), make_trial())
    meta = job["metadata"]
    assert (meta["name"], meta["namespace"]) == ("exp-3", "ns")
    assert meta["labels"][workload.LABEL_EXPERIMENT] == "exp"
    assert meta["labels"][workload.LABEL_TRIAL] == "exp-3"
    assert meta["ownerReferences"] == [
        {"apiVersion": api.API_VERSION, "kind": "Trial", "name": "exp-3", "uid": "trial-uid", "controller": True}
    ]
    pod_meta = job["spec"]["template"]["metadata"]
    assert pod_meta["labels"][workload.LABEL_TRIAL] == "exp-3"
    assert json.loads(pod_meta["annotations"][workload.ANNOTATION_PARAMETERS]) == {"lr": 0.01, "width": 64}


def test_job_parameters_env_args_and_file() -> None:
    job = workload.build_job(make_experiment(), make_trial())
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["args"] == ["--lr=0.01", "--width", "64", "${parameters.lr}"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["KUBENAS_TRIAL"] == "exp-3"  # the contract wins over the user's value
    assert env["USER_VAR"] == "1"
    assert json.loads(env["KUBENAS_PARAMETERS"]) == {"lr": 0.01, "width": 64}
    assert env["KUBENAS_PARAMETERS_FILE"] == "/etc/kubenas/parameters.json"
    assert env["KUBENAS_TERMINATION_LOG"] == "/dev/termination-log"
    assert {"name": "kubenas-parameters", "mountPath": "/etc/kubenas", "readOnly": True} in c["volumeMounts"]
    volume = next(v for v in pod["volumes"] if v["name"] == "kubenas-parameters")
    assert volume["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == "metadata.annotations['kubenas.io/parameters']"


def test_job_runtime_settings_and_passthrough() -> None:
    job = workload.build_job(make_experiment(backoffLimit=2, activeDeadlineSeconds=600), make_trial())
    assert job["spec"]["backoffLimit"] == 2
    assert job["spec"]["activeDeadlineSeconds"] == 600
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["restartPolicy"] == "Never"
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert {"name": "metrics", "containerPort": 8000, "protocol": "TCP"} in c["ports"]
    assert c["resources"] == {"limits": {"nvidia.com/gpu": "1"}}


def test_job_defaults() -> None:
    job = workload.build_job(make_experiment(), make_trial())
    assert job["spec"]["backoffLimit"] == 0
    assert "activeDeadlineSeconds" not in job["spec"]


def test_plain_template_gets_the_restricted_defaults() -> None:
    pod = workload.build_job(make_experiment(), make_trial())["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["automountServiceAccountToken"] is False
    c = pod["containers"][0]
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": podpolicy.SCRATCH_VOLUME, "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": podpolicy.SCRATCH_VOLUME, "emptyDir": {}} in pod["volumes"]


def test_secure_defaults_merge_with_user_fields() -> None:
    exp = make_experiment()
    exp.spec.trial_template.spec["securityContext"] = {"runAsNonRoot": False}
    exp.spec.trial_template.spec["containers"][0]["securityContext"] = {"capabilities": {"add": ["NET_BIND_SERVICE"]}}
    exp.spec.trial_template.spec["initContainers"] = [{"name": "fetch", "image": "busybox"}]
    pod = workload.build_job(exp, make_trial())["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": False, "seccompProfile": {"type": "RuntimeDefault"}}
    capabilities = pod["containers"][0]["securityContext"]["capabilities"]
    assert capabilities == {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}
    assert pod["initContainers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_builder_is_pure() -> None:
    exp = make_experiment()
    before = exp.model_dump()
    assert workload.build_job(exp, make_trial()) == workload.build_job(exp, make_trial())
    assert exp.model_dump() == before


def test_job_needs_trial_uid() -> None:
    trial = make_trial()
    trial.metadata.uid = None
    with pytest.raises(ValueError, match="no uid"):
        workload.build_job(make_experiment(), trial)


def test_build_trial_owned_by_experiment() -> None:
    trial = workload.build_trial(make_experiment(), "exp-0", 0, {"lr": 0.1})
    assert trial["metadata"]["ownerReferences"][0]["uid"] == "exp-uid"
    assert trial["metadata"]["labels"][workload.LABEL_EXPERIMENT] == "exp"
    assert trial["spec"] == {"experiment": "exp", "index": 0, "parameters": {"lr": 0.1}}


def test_a_one_shot_search_trial_is_told_where_its_supernet_is() -> None:
    exp = make_experiment()
    exp.spec.export.artifact_volume = "out"
    exp.spec.trial_template.spec["containers"][0]["volumeMounts"] = [{"name": "out", "mountPath": "/artifacts"}]
    searched = {"width": 32}
    parameters = workload.trial_parameters(searched, "exp-0", lambda name: workload.trial_output_dir(exp, name) or "")
    assert parameters == {"width": 32, "supernet": "/artifacts/exp/exp-0"}
    assert searched == {"width": 32}  # the planner's parameters are left as they were
    assert workload.trial_parameters(searched, None, lambda name: "unused") == searched


def test_artifact_volume_sets_output_dir() -> None:
    exp = make_experiment()
    exp.spec.export.artifact_volume = "out"
    exp.spec.trial_template.spec["containers"][0]["volumeMounts"] = [{"name": "out", "mountPath": "/artifacts/"}]
    c = workload.build_job(exp, make_trial())["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["KUBENAS_OUTPUT_DIR"] == "/artifacts/exp/exp-3"
    assert workload.artifact_location(exp, "exp-3") == "out:exp/exp-3"
    assert workload.artifact_location(make_experiment(), "exp-3") is None


def test_single_pod_trial_is_a_plain_job_without_rendezvous() -> None:
    job = workload.build_job(make_experiment(), make_trial())
    assert "completionMode" not in job["spec"] and "subdomain" not in job["spec"]["template"]["spec"]
    names = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not names & {"MASTER_ADDR", "MASTER_PORT", "NNODES", "NODE_RANK", "WORLD_SIZE", "RANK"}
    assert workload.build_service(make_experiment(), make_trial()) is None


def test_multi_pod_trial_is_an_indexed_job_failing_on_any_rank() -> None:
    job = workload.build_job(make_experiment(replicas=3), make_trial())
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    assert (spec["backoffLimitPerIndex"], spec["maxFailedIndexes"]) == (0, 0)
    assert "backoffLimit" not in spec  # per index: a retry of the whole Job would never come
    assert spec["template"]["spec"]["subdomain"] == "exp-3"


def test_multi_pod_trial_environment_follows_the_contract() -> None:
    exp = make_experiment(replicas=2)
    exp.spec.trial_template.spec["containers"][0]["env"].append({"name": "MASTER_PORT", "value": "1"})
    c = workload.build_job(exp, make_trial())["spec"]["template"]["spec"]["containers"][0]
    values = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    assert values["MASTER_ADDR"] == "exp-3-0.exp-3.ns.svc"
    assert values["MASTER_PORT"] == "29500"  # the contract wins: the Service listens there
    assert (values["NNODES"], values["NPROC_PER_NODE"], values["WORLD_SIZE"]) == ("2", "1", "2")
    index = {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    from_index = {e["name"]: e["valueFrom"] for e in c["env"] if "valueFrom" in e}
    assert from_index == {"NODE_RANK": index, "RANK": index}
    assert [e["name"] for e in c["env"]].count("MASTER_PORT") == 1


def test_multi_gpu_pods_get_nproc_and_no_rank() -> None:
    exp = make_experiment(replicas=2)
    exp.spec.trial_template.spec["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "4"}}
    c = workload.build_job(exp, make_trial())["spec"]["template"]["spec"]["containers"][0]
    names = [e["name"] for e in c["env"]]
    values = {e["name"]: e.get("value") for e in c["env"]}
    assert (values["NPROC_PER_NODE"], values["WORLD_SIZE"]) == ("4", "8")
    assert "NODE_RANK" in names and "RANK" not in names  # torchrun gives each process its RANK


@pytest.mark.parametrize(
    ("resources", "expected"),
    [({}, 1), ({"limits": {"nvidia.com/gpu": 2}}, 2), ({"requests": {"nvidia.com/gpu": "8"}}, 8)],
)
def test_processes_per_pod(resources: dict[str, Any], expected: int) -> None:
    assert workload.processes_per_pod({"resources": resources}) == expected


def test_distributed_environment_for_one_local_rank() -> None:
    env = workload.distributed_environment(2, 1, "127.0.0.1", 4000, node_rank=1)
    assert env == {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "4000",
        "NNODES": "2",
        "NPROC_PER_NODE": "1",
        "WORLD_SIZE": "2",
        "NODE_RANK": "1",
        "RANK": "1",
    }


def test_multi_pod_trial_service_is_headless_and_owned_by_the_trial() -> None:
    service = workload.build_service(make_experiment(replicas=2), make_trial())
    assert service is not None
    meta, spec = service["metadata"], service["spec"]
    assert (meta["name"], meta["namespace"]) == ("exp-3", "ns")
    assert meta["ownerReferences"][0]["uid"] == "trial-uid"
    assert spec["clusterIP"] == "None" and spec["publishNotReadyAddresses"] is True
    assert spec["selector"] == {**workload.child_labels("exp", "exp-3")}
    pod_labels = workload.build_job(make_experiment(replicas=2), make_trial())["spec"]["template"]["metadata"]
    assert spec["selector"].items() <= pod_labels["labels"].items()
    assert spec["ports"][0]["port"] == workload.MASTER_PORT


def test_service_name_is_a_dns_1035_label() -> None:
    assert workload.service_name("exp-3") == "exp-3"
    assert workload.service_name("9lives-3") == "t9lives-3"
    assert workload.master_address("9lives-3", "ns") == "9lives-3-0.t9lives-3.ns.svc"


EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_builds_a_job(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    doc["metadata"] |= {"namespace": "ns", "uid": "exp-uid"}
    exp = api.Experiment.model_validate(doc)
    params = {p.name: (p.values[0] if p.values else p.min) for p in exp.spec.parameters}
    trial = api.Trial.model_validate(
        {
            "metadata": {"name": f"{exp.metadata.name}-0", "namespace": "ns", "uid": "t"},
            "spec": {"experiment": exp.metadata.name, "index": 0, "parameters": params},
        }
    )
    job = workload.build_job(exp, trial)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert not any("${parameters." in arg for arg in container.get("args", []) + container.get("command", []))
    assert len(job["metadata"]["name"]) <= api.MAX_NAME_LENGTH


def test_no_queue_leaves_the_job_unsuspended_and_unlabelled() -> None:
    job = workload.build_job(make_experiment(), make_trial())
    assert "suspend" not in job["spec"]
    assert api.QUEUE_LABEL not in job["metadata"]["labels"]


def test_queue_name_labels_the_job_and_creates_it_suspended() -> None:
    exp = make_experiment()
    exp.spec.queue_name = "team-gpus"
    job = workload.build_job(exp, make_trial())
    assert job["metadata"]["labels"][api.QUEUE_LABEL] == "team-gpus"
    assert job["spec"]["suspend"] is True  # Kueue admits it by setting suspend to false
    assert job["metadata"]["labels"][workload.LABEL_TRIAL] == "exp-3"  # the operator's own labels stay


def test_the_template_queue_label_is_the_default_queue() -> None:
    exp = make_experiment(metadata={"labels": {api.QUEUE_LABEL: "cpu-queue", "team": "vision"}})
    job = workload.build_job(exp, make_trial())
    assert job["metadata"]["labels"][api.QUEUE_LABEL] == "cpu-queue" and job["spec"]["suspend"] is True


def test_disrupted_pods_are_ignored_by_the_job_before_any_other_rule() -> None:
    for exp in (make_experiment(), make_experiment(replicas=2)):
        spec = workload.build_job(exp, make_trial())["spec"]
        assert spec["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy requires it
        rules = spec["podFailurePolicy"]["rules"]
        assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}


def test_checkpoint_dir_is_per_trial_on_the_artifact_volume() -> None:
    exp = make_experiment()
    exp.spec.export.artifact_volume = "out"
    exp.spec.trial_template.spec["containers"][0]["volumeMounts"] = [{"name": "out", "mountPath": "/artifacts"}]
    c = workload.build_job(exp, make_trial())["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env[workload.CHECKPOINT_DIR_ENV] == "/artifacts/exp/checkpoints/exp-3"
    assert not env[workload.CHECKPOINT_DIR_ENV].startswith(env["KUBENAS_OUTPUT_DIR"])  # not exported as an artifact
    without = workload.build_job(make_experiment(), make_trial())["spec"]["template"]["spec"]["containers"][0]
    assert workload.CHECKPOINT_DIR_ENV not in {e["name"] for e in without["env"]}
