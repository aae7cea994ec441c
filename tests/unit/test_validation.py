"""``kubenas validate``: the invalid table, bad input of every kind, and every example."""

from __future__ import annotations

import copy
import io
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from invalid_manifests import CASES, VALID, Case
from kubenas import cli, validation

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(ROOT.glob("examples/**/*.yaml")) + sorted(ROOT.glob("examples/**/*.yml"))


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def run(files: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = validation.main(files)
    return code, capsys.readouterr().out.splitlines()


def has_problem(problems: list[validation.Problem], path: str, words: tuple[str, ...]) -> bool:
    return any(p.path == path and all(w.lower() in p.message.lower() for w in words) for p in problems)


# --------------------------------------------------------------------------- the table


def test_the_table_has_at_least_30_cases_the_api_server_refuses_too() -> None:
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum(c.apiserver for c in CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_invalid_manifest_is_refused_with_its_field_path(case: Case) -> None:
    problems = validation.validate_document(case.manifest())
    assert has_problem(problems, case.path, case.words), problems


@pytest.mark.parametrize("case", CASES[::7], ids=lambda c: c.id)
def test_invalid_manifest_file_prints_file_path_and_message(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = write(tmp_path, f"{case.id}.yaml", yaml.safe_dump(case.manifest()))
    code, lines = run([name], capsys)
    assert code == 1
    assert any(line.startswith(f"{name}: {case.path}: ") for line in lines), lines


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_manifest_has_no_problems(name: str) -> None:
    assert validation.validate_document(VALID[name]) == []


# --------------------------------------------------------------------------- files and bad input


def test_valid_files_print_valid_and_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = [write(tmp_path, f"{key}.yaml", yaml.safe_dump(doc)) for key, doc in sorted(VALID.items())]
    code, lines = run(names, capsys)
    assert code == 0
    assert lines == [f"{name}: valid" for name in names]


def test_one_bad_file_among_good_ones_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "good.yaml", yaml.safe_dump(VALID["single"]))
    bad = write(tmp_path, "bad.yaml", yaml.safe_dump(CASES[0].manifest()))
    code, lines = run([good, bad], capsys)
    assert code == 1
    assert lines[0] == f"{good}: valid"
    assert lines[1] == f"{bad}: spec.parameters[0].max: min must be less than max"


def test_multi_document_file_labels_each_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = yaml.safe_dump_all([VALID["single"], CASES[0].manifest()]) + "---\n"
    name = write(tmp_path, "all.yaml", text)
    code, lines = run([name], capsys)
    assert code == 1
    assert lines == [f"{name}#1: valid", f"{name}#2: spec.parameters[0].max: min must be less than max"]


def test_standard_input_is_read_for_dash(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(yaml.safe_dump(VALID["pareto"]).encode()))
    monkeypatch.setattr(sys, "stdin", stdin)
    code, lines = run(["-"], capsys)
    assert (code, lines) == (0, ["-: valid"])


def test_cli_dispatches_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = write(tmp_path, "x.yaml", yaml.safe_dump(VALID["weighted"]))
    assert cli.main(["validate", name]) == 0
    assert capsys.readouterr().out == f"{name}: valid\n"


BAD_INPUT = {
    "not-yaml": ("spec: [unclosed\n", "not valid YAML"),
    "tab-indented": ("a:\n\tb: 1\n", "not valid YAML"),
    "a-list": ("- 1\n- 2\n", "expected a Kubernetes object (a mapping), got a list"),
    "a-string": ("hello\n", "got a string"),
    "empty": ("", "no documents"),
    "only-comments": ("# nothing\n---\n", "no documents"),
    "wrong-kind": ("apiVersion: kubenas.io/v1alpha1\nkind: Pod\nmetadata: {name: x}\n", "kind: must be Experiment"),
    "wrong-api-version": (
        "apiVersion: kubeflow.org/v1beta1\nkind: Experiment\nmetadata: {name: x}\n",
        "apiVersion: must be kubenas.io/v1alpha1",
    ),
    "no-kind": ("metadata: {name: x}\n", "kind: must be Experiment or Trial, got None"),
    "deeply-nested-flow": ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    "deeply-nested-block": ("".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v\n", "levels deep"),
    "alias-bomb": (
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
        + "kind: Experiment\n",
        "after expanding YAML anchors",
    ),
    "not-utf8": ("\udcff", "not UTF-8 text (byte 0)"),
    "duplicate-key": ("kind: Experiment\nkind: Trial\n", "duplicate key 'kind': each key may appear once (line 2"),
    "duplicate-nested-key": ("spec:\n  a: 1\n  a: 2\n", "duplicate key 'a': each key may appear once (line 3"),
    "merge-key-overridden": ("base: &b {x: 1}\nc:\n  <<: *b\n  x: 2\n", "kind: must be Experiment or Trial"),
    "integer-of-5000-digits": ("a: " + "1" * 5000 + "\n", "4300 digits) for integer string conversion"),
    "thirteenth-month": ("a: 2001-13-01\n", "cannot read the value '2001-13-01': month must be in 1..12 (line 1"),
    "lone-surrogate": ('a: "\\ud800"\n', "the text '\\ud800' holds a lone surrogate"),
    "nul-character": ("a: b\0c\n", "character #x0000 is not allowed in YAML (line 1)"),
}


@pytest.mark.parametrize("key", sorted(BAD_INPUT))
def test_bad_input_is_one_line_never_a_traceback(key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, expected = BAD_INPUT[key]
    path = tmp_path / f"{key}.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    code, lines = run([str(path)], capsys)
    assert code == 1
    assert lines and all(line.startswith(f"{path}: ") for line in lines)
    assert expected in "\n".join(lines)


def test_missing_file_and_directory_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nope.yaml")
    code, lines = run([missing, str(tmp_path)], capsys)
    assert code == 1
    assert lines == [f"{missing}: cannot read: No such file or directory", f"{tmp_path}: cannot read: Is a directory"]


def test_huge_file_is_refused_without_reading_it_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = write(tmp_path, "huge.yaml", "# padding\n" * (validation.MAX_FILE_BYTES // 10 + 10))
    code, lines = run([name], capsys)
    assert code == 1
    assert lines == [f"{name}: larger than 1024 KiB; not a manifest kubenas reads"]


def test_trial_documents_are_validated_too() -> None:
    trial = {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "Trial",
        "metadata": {"name": "digits-cnn-0"},
        "spec": {"experiment": "digits-cnn", "index": -1, "parameters": {"lr": 0.01}},
    }
    problems = validation.validate_document(trial)
    assert [p.path for p in problems] == ["spec.index"]


# --------------------------------------------------------------------------- the trial pod policy


def privileged_in(namespace: str | None) -> dict[str, Any]:
    doc = copy.deepcopy(VALID["single"])
    doc["metadata"].pop("namespace", None)
    if namespace:
        doc["metadata"]["namespace"] = namespace
    doc["spec"]["trialTemplate"]["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    doc["spec"]["trialTemplate"]["spec"]["serviceAccountName"] = "deployer"
    return doc


def test_pod_policy_is_checked_against_restricted_by_default() -> None:
    problems = validation.validate_document(privileged_in("ml"))
    assert [(p.path, p.message) for p in problems] == [
        (
            "spec.trialTemplate.spec.containers[0].securityContext.privileged",
            "privileged: true is forbidden by the restricted trial pod policy; "
            "allow it with the chart value trialPodPolicy.namespaces.ml.level: privileged",
        ),
        (
            "spec.trialTemplate.spec.serviceAccountName",
            "serviceAccountName 'deployer' is forbidden by the restricted trial pod policy; "
            "allow it with the chart value trialPodPolicy.namespaces.ml.serviceAccounts: [deployer]",
        ),
    ]
    assert validation.validate_document(privileged_in("ml"), policies=None) == []  # the local runner's check


POLICY_VALUES = {"namespaces": {"ml": {"level": "privileged", "serviceAccounts": ["deployer"]}}}


@pytest.mark.parametrize("wrapped", [False, True], ids=["policy-value", "chart-values-file"])
def test_policy_file_relaxes_its_namespaces_only(
    wrapped: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = {"trialPodPolicy": POLICY_VALUES, "replicas": 1} if wrapped else POLICY_VALUES
    policy = write(tmp_path, "policy.yaml", yaml.safe_dump(values))
    relaxed = write(tmp_path, "ml.yaml", yaml.safe_dump(privileged_in("ml")))
    other = write(tmp_path, "other.yaml", yaml.safe_dump(privileged_in("other")))
    unnamed = write(tmp_path, "none.yaml", yaml.safe_dump(privileged_in(None)))
    assert cli.main(["validate", "--policy", policy, relaxed, other, unnamed]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{relaxed}: valid"
    assert sum(line.startswith(f"{other}: ") for line in lines) == 2
    assert f"{unnamed}: spec.trialTemplate.spec.containers[0].securityContext.privileged: " in lines[-2]
    assert lines[-2].endswith("trialPodPolicy.namespaces.<namespace>.level: privileged")


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("namespaces: {ml: lax}\n", "trialPodPolicy.namespaces.ml.level must be one of"),
        ("[unclosed\n", "not valid YAML"),
    ],
    ids=["bad-level", "not-yaml"],
)
def test_unusable_policy_file_exits_2(
    text: str, complaint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = write(tmp_path, "policy.yaml", text)
    manifest = write(tmp_path, "x.yaml", yaml.safe_dump(VALID["single"]))
    assert validation.main([manifest], policy_file=policy) == 2
    out = capsys.readouterr().out
    assert out.startswith(f"{policy}: ") and complaint in out, out


# --------------------------------------------------------------------------- examples


def example_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    if EXAMPLES:
        return EXAMPLES
    directory = tmp_path_factory.mktemp("fixtures")
    for key, doc in VALID.items():
        (directory / f"{key}.yaml").write_text(yaml.safe_dump(doc))
    return sorted(directory.glob("*.yaml"))


def test_every_example_validates(tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(p) for p in example_files(tmp_path_factory)]
    code, lines = run(files, capsys)
    assert code == 0, "\n".join(lines)
    assert len(lines) >= len(files)
