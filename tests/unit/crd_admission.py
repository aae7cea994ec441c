"""What the API server does with a manifest, emulated from the committed CRD.

Defaulting, schema validation (with kubectl's strict unknown-field check) and every CEL
rule (``x-kubernetes-validations``) evaluated by cel-python with values typed as the
schema types them (a ``number`` field is a double even when written ``1``).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from celpy import celtypes

ROOT = Path(__file__).resolve().parents[2]
CRD_FILES = {"Experiment": "crds/experiments.kubenas.io.yaml", "Trial": "crds/trials.kubenas.io.yaml"}

Schema = dict[str, Any]


@dataclass(frozen=True)
class Failure:
    """One refusal: where and why, as the API server would report it."""

    path: str
    message: str
    source: str  # "schema" or "cel"


@dataclass(frozen=True)
class RuleSite:
    """A CEL rule and where in the schema it sits."""

    path: tuple[str | int, ...]
    schema: Schema
    rule: Schema


def load_crd(kind: str) -> Schema:
    return yaml.safe_load((ROOT / CRD_FILES[kind]).read_text())


@functools.cache
def _openapi_schema(kind: str) -> Schema:
    return load_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def openapi_schema(kind: str) -> Schema:
    """The committed CRD's schema (a fresh copy: callers may change it)."""
    return copy.deepcopy(_openapi_schema(kind))


def format_path(path: tuple[str | int, ...] | list[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# --------------------------------------------------------------------------- defaulting


def apply_defaults(value: Any, schema: Schema) -> Any:
    """Structural defaulting: missing properties with a default get it, recursively."""
    if isinstance(value, dict) and "properties" in schema:
        for name, prop in schema["properties"].items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                value[name] = apply_defaults(value[name], prop)
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key in value:
            value[key] = apply_defaults(value[key], schema["additionalProperties"])
    elif isinstance(value, list) and "items" in schema:
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


# --------------------------------------------------------------------------- schema validation


def strict_json_schema(schema: Schema, lenient: bool = False) -> Schema:
    """The CRD schema as JSON Schema, refusing unknown fields as ``kubectl --validate=strict`` does.

    A resource's metadata declares only name and generateName (the API server checks the rest of
    ObjectMeta itself), so it is not strict (``lenient``); :func:`openapi_schema` is a resource root.
    """
    out = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-") and k != "default"}
    if "properties" in out:
        is_resource = "apiVersion" in out["properties"] and "kind" in out["properties"]
        out["properties"] = {
            name: strict_json_schema(prop, lenient=is_resource and name == "metadata")
            for name, prop in out["properties"].items()
        }
        if not schema.get("x-kubernetes-preserve-unknown-fields") and not lenient:
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = strict_json_schema(out[key])
    return out


@functools.cache
def _validator(kind: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(strict_json_schema(openapi_schema(kind)))


def schema_failures(manifest: Any, kind: str) -> list[Failure]:
    validator = _validator(kind)
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))
    return [failure for error in errors for failure in apiserver_failures(error)]


def apiserver_failures(error: jsonschema.ValidationError) -> list[Failure]:
    """A JSON Schema error reported the way the API server words it (field path, message)."""
    path = list(error.absolute_path)
    kind, limit = error.validator, error.validator_value
    if kind == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return [
            Failure(format_path([*path, name]), f'unknown field "{format_path([*path, name])}"', "schema")
            for name in extra
        ]
    if kind == "required":
        missing = [name for name in limit if name not in error.instance]
        return [Failure(format_path([*path, name]), "Required value", "schema") for name in missing]
    messages = {
        "enum": lambda: f"Unsupported value: {error.instance!r}: supported values: " + ", ".join(map(repr, limit)),
        "type": lambda: f"Invalid value: {error.instance!r}: must be of type {limit}",
        "minimum": lambda: f"should be greater than or equal to {limit}",
        "maximum": lambda: f"should be less than or equal to {limit}",
        "pattern": lambda: f"should match '{limit}'",
        "maxLength": lambda: f"Too long: may not be more than {limit} bytes",
        "minLength": lambda: f"should be at least {limit} chars long",
        "maxItems": lambda: f"Too many: {len(error.instance)}: must have at most {limit} items",
        "minItems": lambda: f"should have at least {limit} items",
        "maxProperties": lambda: f"Too many: {len(error.instance)}: must have at most {limit} items",
    }
    message = messages[kind]() if kind in messages else error.message
    return [Failure(format_path(path), message, "schema")]


# --------------------------------------------------------------------------- CEL


def to_cel(value: Any, schema: Schema) -> Any:
    """A value typed as the API server types it for CEL."""
    kind = schema.get("type")
    if kind == "number":
        return celtypes.DoubleType(float(value))
    if kind == "integer":
        return celtypes.IntType(value)
    if kind == "string":
        return celtypes.StringType(value)
    if kind == "boolean":
        return celtypes.BoolType(value)
    if kind == "array":
        return celtypes.ListType([to_cel(item, schema.get("items", {})) for item in value])
    if kind == "object" and "properties" in schema:
        props = schema["properties"]
        return celtypes.MapType({celtypes.StringType(k): to_cel(v, props[k]) for k, v in value.items() if k in props})
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return celtypes.MapType(
            {celtypes.StringType(k): to_cel(v, schema["additionalProperties"]) for k, v in value.items()}
        )
    return celpy.json_to_cel(value)


@functools.cache
def _program(expression: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(expression))


def rule_sites(schema: Schema, path: tuple[str | int, ...] = ()) -> Iterator[RuleSite]:
    """Every CEL rule in a schema, with its schema path (``*`` for list items and map values)."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield RuleSite(path, schema, rule)
    for name, prop in schema.get("properties", {}).items():
        yield from rule_sites(prop, (*path, name))
    if isinstance(schema.get("items"), dict):
        yield from rule_sites(schema["items"], (*path, "*"))
    if isinstance(schema.get("additionalProperties"), dict):
        yield from rule_sites(schema["additionalProperties"], (*path, "*"))


def _nodes(value: Any, schema: Schema, path: tuple[str | int, ...]) -> Iterator[tuple[tuple, Any, Schema]]:
    yield path, value, schema
    if isinstance(value, dict) and "properties" in schema:
        for name, prop in schema["properties"].items():
            if name in value:
                yield from _nodes(value[name], prop, (*path, name))
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            yield from _nodes(item, schema["additionalProperties"], (*path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from _nodes(item, schema["items"], (*path, i))


def _old_value(old: Any, path: tuple) -> Any:
    """The stored value at ``path`` when the path is correlatable (object properties only)."""
    for part in path:
        if isinstance(part, int) or not isinstance(old, dict) or part not in old:
            return None
        old = old[part]
    return old


def evaluate_rule(expression: str, value: Any, schema: Schema, old: Any = None) -> bool | str:
    """True or False, or the evaluation error as text (the API server refuses on errors too)."""
    activation = {"self": to_cel(value, schema)}
    if old is not None:
        activation["oldSelf"] = to_cel(old, schema)
    try:
        result = _program(expression).evaluate(activation)
    except celpy.CELEvalError as error:
        return f"error: {error.args[0]}"
    if isinstance(result, celpy.CELEvalError):
        return f"error: {result.args[0]}"
    return bool(result)


def cel_failures(manifest: Any, schema: Schema, old: Any = None) -> list[Failure]:
    failures = []
    for path, value, node in _nodes(manifest, schema, ()):
        for rule in node.get("x-kubernetes-validations", []):
            transition = "oldSelf" in rule["rule"]
            old_value = _old_value(old, path) if transition else None
            if transition and old_value is None:
                continue
            result = evaluate_rule(rule["rule"], value, node, old_value)
            if result is not True:
                where = path + tuple(re.findall(r"\.([A-Za-z0-9_]+)", rule.get("fieldPath", "")))
                message = rule["message"] if result is False else f"{rule['message']} ({result})"
                if rule.get("reason") == "FieldValueDuplicate":  # the API server's answer drops the message
                    message = "Duplicate value"
                failures.append(Failure(format_path(where), message, "cel"))
    return failures


def admit(manifest: Any, kind: str = "Experiment", old: Any = None) -> list[Failure]:
    """The API server's answer to creating (or, with ``old``, updating) ``manifest``: [] means accepted."""
    schema = _openapi_schema(kind)
    obj = apply_defaults(copy.deepcopy(manifest), schema)
    failures = schema_failures(obj, kind)
    if failures:
        return failures
    old_obj = apply_defaults(copy.deepcopy(old), schema) if old is not None else None
    return cel_failures(obj, schema, old_obj)
