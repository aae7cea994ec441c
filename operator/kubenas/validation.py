"""``kubenas validate``: what the API server would refuse, plus what only the operator checks.

Every problem is reported as ``FILE: spec.path.to.field: what is wrong``; bad input of any
kind (not YAML, not a mapping, too large, too deeply nested, unreadable) is a problem too,
never a traceback. :func:`validate_document` is the reusable core (the local runner calls it).
The trial pod policy is checked against the restricted default, or the policy of ``--policy FILE``
(the chart's ``trialPodPolicy`` value) for the manifest's namespace.
"""

from __future__ import annotations

import difflib
import functools
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from kubenas import api, podpolicy, results

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 200_000
SUBSTITUTION = re.compile(r"\$\{parameters\.([^}]*)\}")
UNION_TAGS = {"bool", "int", "float", "str"}
MODELS: dict[str, type[api.Model]] = {"Experiment": api.Experiment, "Trial": api.Trial}
FRIENDLIER = {
    "Extra inputs are not permitted": "unknown field",
    "Field required": "required field is missing",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document.

    Attributes:
        path: the field, e.g. ``spec.parameters[2].max`` (empty for the document itself).
        message: what is wrong, in the user's terms.
    """

    path: str
    message: str

    def render(self, label: str) -> str:
        return f"{label}: {self.path}: {self.message}" if self.path else f"{label}: {self.message}"


def format_path(parts: Iterable[str | int]) -> str:
    """``("spec", "parameters", 2, "max")`` → ``spec.parameters[2].max``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def join_path(base: str, relative: str) -> str:
    if not relative:
        return base
    if not base or relative.startswith("["):
        return base + relative
    return f"{base}.{relative}"


# --------------------------------------------------------------------------- documents


def validate_document(doc: Any, policies: podpolicy.Policies | None = podpolicy.RESTRICTED) -> list[Problem]:
    """Every problem with one parsed YAML document (an Experiment or a Trial); [] when valid.

    ``policies``: the trial pod policies the operator enforces (the document's namespace picks one);
    None checks no pod policy (the local runner, which starts no pod).
    """
    if not isinstance(doc, dict):
        return [Problem("", f"expected a Kubernetes object (a mapping), got {_type_name(doc)}")]
    shape = _shape_problem(doc)
    if shape:
        return [shape]
    problems = []
    if doc.get("apiVersion") != api.API_VERSION:
        problems.append(Problem("apiVersion", f"must be {api.API_VERSION}, got {doc.get('apiVersion')!r}"))
    model = MODELS.get(doc.get("kind"))  # type: ignore[arg-type]
    if model is None:
        problems.append(Problem("kind", f"must be Experiment or Trial, got {doc.get('kind')!r}"))
    if problems or model is None:
        return problems
    try:
        parsed = model.model_validate(doc)
    except ValidationError as error:
        return pydantic_problems(error)
    if isinstance(parsed, api.Experiment):
        policy = None if policies is None else policies.for_namespace(parsed.metadata.namespace)
        return experiment_problems(parsed.spec, policy)
    return []


def _type_name(value: Any) -> str:
    names = {type(None): "an empty document", list: "a list", str: "a string", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _shape_problem(doc: Any) -> Problem | None:
    """Refuses documents too deep or too large to check (anchors can multiply a small file)."""
    stack: list[tuple[Any, int]] = [(doc, 0)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if depth > MAX_DEPTH:
            return Problem("", f"nested more than {MAX_DEPTH} levels deep")
        if nodes > MAX_NODES:
            return Problem("", f"more than {MAX_NODES} values (after expanding YAML anchors)")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return None


def pydantic_problems(error: ValidationError) -> list[Problem]:
    """pydantic's errors as problems, with the rule's own field for cross-field rules."""
    by_path: dict[str, list[str]] = {}
    for item in error.errors():
        loc = list(item["loc"])
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, api.RuleViolation):
            path, message = join_path(format_path(loc), cause.field), cause.message
        else:
            if loc and loc[-1] in UNION_TAGS:
                loc = loc[:-1]
                message = "must be a boolean, number or string"
            else:
                message = FRIENDLIER.get(item["msg"], item["msg"])
            path = format_path(loc)
        if message not in by_path.setdefault(path, []):
            by_path[path].append(message)
    return [Problem(path, message) for path, messages in by_path.items() for message in messages]


# --------------------------------------------------------------------------- what only the operator checks


def experiment_problems(spec: api.ExperimentSpec, pod_policy: podpolicy.Policy | None) -> list[Problem]:
    """Checks beyond the CRD: the pod template and its pod policy, the algorithm, substitutions, ``when`` cycles.

    ``pod_policy``: what the operator lets trial pods of the experiment's namespace ask for
    (None: not checked).
    """
    return [
        *trial_template_problems(spec.trial_template),
        *([] if pod_policy is None else pod_policy_problems(spec.trial_template, pod_policy)),
        *algorithm_problems(spec.algorithm),
        *substitution_problems(spec),
        *when_cycle_problems(spec.parameters),
    ]


@functools.cache
def _pod_template_validator() -> Any:
    import jsonschema
    import referencing
    from kubernetes_validate import utils

    directory = f"kubernetes-json-schema/v{utils.latest_version()}-local-strict"
    schema = utils.schema_contents(f"{directory}/podtemplatespec-v1.json", utils.latest_version())
    definitions = utils.schema_contents(f"{directory}/_definitions.json", utils.latest_version())
    registry = referencing.Resource.from_contents(definitions) @ referencing.Registry()
    registry = referencing.Resource.from_contents(schema) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def trial_template_problems(template: api.TrialTemplate) -> list[Problem]:
    """The pod template checked against the official Kubernetes PodTemplateSpec schema."""
    pod_template = {"metadata": template.metadata or {}, "spec": template.spec}
    errors = sorted(_pod_template_validator().iter_errors(pod_template), key=lambda e: [str(p) for p in e.path])
    return [
        Problem(join_path("spec.trialTemplate", format_path(list(e.absolute_path))), _schema_message(e)) for e in errors
    ]


def pod_policy_problems(template: api.TrialTemplate, policy: podpolicy.Policy) -> list[Problem]:
    """What the template asks for beyond ``policy``, once the operator's secure defaults are merged in."""
    pod_template = {"metadata": template.metadata or {}, "spec": podpolicy.apply_defaults(template.spec)}
    return [
        Problem(join_path("spec.trialTemplate", v.path), v.message) for v in podpolicy.violations(pod_template, policy)
    ]


def _schema_message(error: Any) -> str:
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown field")
    return str(error.message)


def algorithm_problems(algorithm: api.Algorithm) -> list[Problem]:
    from kubenas import algorithms

    names = algorithms.known_names()
    if algorithm.name in names:
        return []
    close = difflib.get_close_matches(algorithm.name, names, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else " (see kubenas.algorithms.known_names())"
    return [Problem("spec.algorithm.name", f"unknown algorithm {algorithm.name!r}{hint}")]


def substitution_problems(spec: api.ExperimentSpec) -> list[Problem]:
    """``${parameters.X}`` in a container's command or args must name a parameter."""
    names = {p.name for p in spec.parameters}
    problems = []
    containers = spec.trial_template.spec.get("containers") or []
    for i, container in enumerate(containers):
        if not isinstance(container, dict):
            continue
        for field in ("command", "args"):
            values = container.get(field)
            for j, text in enumerate(values if isinstance(values, list) else []):
                for name in SUBSTITUTION.findall(text) if isinstance(text, str) else []:
                    if name not in names:
                        path = f"spec.trialTemplate.spec.containers[{i}].{field}[{j}]"
                        problems.append(Problem(path, f"${{parameters.{name}}} names no parameter"))
    return problems


def when_cycle_problems(parameters: Sequence[api.Parameter]) -> list[Problem]:
    """Conditional parameters must not depend on each other in a circle."""
    depends = {p.name: list(p.when or {}) for p in parameters}
    index = {p.name: i for i, p in enumerate(parameters)}
    reported: set[frozenset[str]] = set()
    problems = []
    for start in depends:
        cycle = _find_cycle(start, depends)
        if cycle and frozenset(cycle) not in reported:
            reported.add(frozenset(cycle))
            path = f"spec.parameters[{index[start]}].when"
            problems.append(Problem(path, "conditional parameters form a cycle: " + " → ".join([*cycle, start])))
    return problems


def _find_cycle(start: str, depends: dict[str, list[str]]) -> list[str] | None:
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    while stack:
        name, trail = stack.pop()
        for other in depends.get(name, []):
            if other == start:
                return trail
            if other not in trail:
                stack.append((other, [*trail, other]))
    return None


# --------------------------------------------------------------------------- files


def read_source(name: str) -> tuple[str | None, str | None]:
    """The text of a file (``-`` is standard input), or why it cannot be read."""
    try:
        if name == "-":
            data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        else:
            with open(name, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        return None, f"cannot read: {error.strerror or error}"
    if len(data) > MAX_FILE_BYTES:
        return None, f"larger than {MAX_FILE_BYTES // 1024} KiB; not a manifest kubenas reads"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as error:
        return None, f"not UTF-8 text (byte {error.start})"


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what it would let through silently or crash on.

    A key given twice in one mapping (PyYAML keeps the last) is an error at the second one's
    line; so is a value Python cannot build (an integer of 5,000 digits, a 13th month) and text
    that is not Unicode (a lone surrogate, which no file or terminal can encode).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` may be overridden by explicit keys; that is no duplicate
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # an unhashable key: the base class refuses it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {_shorten(repr(key))}: each key may appear once", key_node.start_mark
                )
        return super().construct_mapping(node, deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            value = super().construct_object(node, deep)
        except (ValueError, OverflowError) as error:
            shown = _shorten(repr(getattr(node, "value", "")))
            reason = str(error).split(";")[0] or type(error).__name__
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value {shown}: {reason}", node.start_mark
            ) from None
        if isinstance(value, str) and not results.is_unicode_text(value):  # "\ud800" escapes make these
            problem = f"the text {_shorten(repr(value))} holds a lone surrogate (\\uD800-\\uDFFF)"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark)
        return value


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def parse_documents(text: str) -> tuple[list[Any], str | None]:
    """The non-empty YAML documents of ``text``, or why it is not YAML (with the line, when known)."""
    try:
        docs = [doc for doc in yaml.load_all(text, Loader=StrictLoader) if doc is not None]
    except yaml.YAMLError as error:
        return [], f"not valid YAML: {_yaml_problem(error, text)}"
    except RecursionError:
        return [], "not valid YAML: nested too deeply"
    if not docs:
        return [], "no documents (the file is empty)"
    return docs, None


def _yaml_problem(error: yaml.YAMLError, text: str) -> str:
    if isinstance(error, yaml.reader.ReaderError):  # a character YAML does not allow, e.g. NUL
        line = text.count("\n", 0, error.position) + 1
        return f"character #x{error.character:04x} is not allowed in YAML (line {line})"
    mark = getattr(error, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(error, "problem", None) or type(error).__name__
    return f"{problem}{where}"


def load_policies(name: str) -> tuple[podpolicy.Policies | None, str | None]:
    """The trial pod policies in a YAML file (the chart's ``trialPodPolicy`` value, or a values file
    holding it), or why they cannot be read."""
    text, problem = read_source(name)
    if text is None:
        return None, problem
    docs, problem = parse_documents(text)
    if problem:
        return None, problem
    data = docs[0]
    if isinstance(data, dict) and podpolicy.CHART_VALUE in data:
        data = data[podpolicy.CHART_VALUE]
    try:
        return podpolicy.parse_policies(data), None
    except ValueError as error:
        return None, str(error)


def check_file(name: str, policies: podpolicy.Policies = podpolicy.RESTRICTED) -> Iterator[tuple[str, list[Problem]]]:
    """(label, problems) for each document of a file; the label names the document if there are several."""
    text, problem = read_source(name)
    if text is None:
        yield name, [Problem("", problem or "cannot read")]
        return
    docs, problem = parse_documents(text)
    if problem:
        yield name, [Problem("", problem)]
        return
    for number, doc in enumerate(docs, start=1):
        label = f"{name}#{number}" if len(docs) > 1 else name
        yield label, check_document(doc, policies)


def check_document(doc: Any, policies: podpolicy.Policies | None = podpolicy.RESTRICTED) -> list[Problem]:
    """:func:`validate_document`, with a document too deep for Python's recursion as a problem too."""
    try:
        return validate_document(doc, policies)
    except RecursionError:
        return [Problem("", f"nested more than {MAX_DEPTH} levels deep")]


def main(files: Sequence[str], policy_file: str | None = None) -> int:
    """Validate every document of every file; print one line per problem. 0 if all are valid, else 1
    (2: the policy file is unusable)."""
    policies = podpolicy.RESTRICTED
    if policy_file is not None:
        loaded, error = load_policies(policy_file)
        if loaded is None:
            print(f"{policy_file}: {error}")
            return 2
        policies = loaded
    failed = False
    for name in files:
        for label, problems in check_file(name, policies):
            if problems:
                failed = True
                for problem in problems:
                    print(problem.render(label))
            else:
                print(f"{label}: valid")
    return 1 if failed else 0
