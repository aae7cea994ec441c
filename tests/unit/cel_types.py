"""The API server's view of a CRD's CEL rules, offline: types, compilation and cost.

cel-python (``crd_admission``) evaluates rules without type-checking them, so a rule naming a
field the API server cannot see passes there and is refused by ``kubectl apply``. This module
does what the API server (Kubernetes v1.36) does when a CRD is created:

- :func:`decl_type` translates a structural schema into the type CEL gets for ``self``, as
  ``k8s.io/apiserver/pkg/cel/common/schemas.go`` ``SchemaDeclType`` does: an object has exactly
  its typed properties (x-kubernetes-preserve-unknown-fields adds none); a property, list or map
  whose type cannot be built is left out (a rule naming it fails with ``undefined field``);
  x-kubernetes-int-or-string is ``dyn``; string formats byte/duration/date/date-time are
  bytes/duration/timestamp; a resource root always has apiVersion, kind, metadata.name and
  metadata.generateName. Each type keeps the size bound the cost estimator uses.
- :class:`ProtoTypes` and :func:`new_env` turn those types into protobuf messages built at run time, and compiles
  every rule (and ``oldSelf`` in transition rules) with Google's C++ CEL type checker
  (``cel-expr-python``), declared as Kubernetes declares it (cross-type numeric comparisons,
  strings/math/bindings/optional extensions), plus the checks the API server adds on top:
  a bool result, homogeneous list and map literals, valid regex literals.
- :func:`check_crd` costs each rule with ``cel_cost.estimate_cost`` (cel-go's static estimator
  with the API server's size estimator and library costs, over the checked AST the C++ checker
  returns), multiplies it by how many times the rule can run per object (apiextensions
  ``CELSchemaContext``) and applies ``StaticEstimatedCostLimit`` and ``StaticEstimatedCRDCostLimit``.

Limits of the emulation (none matters for the kubenas CRDs, and a test says so): a list or map
nested directly in a list or map is typed with ``dyn`` elements (protobuf cannot nest repeated
fields); Kubernetes-only CEL libraries (quantity, url, ip, sets, two-variable comprehensions, ...)
are not declared, so a rule using them fails here with ``undeclared reference``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cel_cost import ast_problems, checked_ast, estimate_cost, map_entry_name, saturated, type_name_arg
from cel_expr_python import cel
from cel_expr_python.ext import ext_bindings, ext_math, ext_optional, ext_strings
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    struct_pb2,
    timestamp_pb2,
)

Schema = dict[str, Any]

# k8s.io/apiserver/pkg/apis/cel/config.go and k8s.io/apiserver/pkg/cel/limits.go
MAX_REQUEST_SIZE_BYTES = 3 * 1024 * 1024
PER_CALL_LIMIT = 1_000_000  # runtime: one evaluation of one rule
RUNTIME_CEL_COST_BUDGET = 10_000_000  # runtime: all rules on one object
MAX_DURATION_SIZE_JSON = 32
MAX_DATETIME_SIZE_JSON = 32
JSON_DATE_SIZE = 12
MIN_DURATION_SIZE_JSON = 3
MIN_DATETIME_SIZE_JSON = 21
MIN_STRING_SIZE = 2
MIN_BOOL_SIZE = 4
MIN_NUMBER_SIZE = 1
# k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation/validation.go
STATIC_ESTIMATED_COST_LIMIT = 10_000_000  # one rule, times how often it can run per object
STATIC_ESTIMATED_CRD_COST_LIMIT = 100_000_000  # every rule of the CRD together
SUPPORTED_REASONS = {"FieldValueRequired", "FieldValueForbidden", "FieldValueInvalid", "FieldValueDuplicate"}
# The API server answers a failed rule with this reason as `field: Duplicate value: <value>`: its message is lost.
MESSAGE_DROPPED_REASONS = {"FieldValueDuplicate"}


# --------------------------------------------------------------------------- declared types


@dataclass(eq=False)
class DeclType:
    """apiservercel.DeclType: a CEL type with the size bounds the cost estimator reads.

    ``kind`` is object, list, map, string, bytes, bool, double, int, dyn, timestamp or duration.
    ``imprecise`` marks a list or map nested directly in another (typed with dyn elements here).
    """

    kind: str
    max_elements: int = 0
    min_size: int = 0
    fields: dict[str, DeclType] = field(default_factory=dict)
    elem: DeclType | None = None
    imprecise: bool = False

    @property
    def is_object(self) -> bool:
        return self.kind == "object"


CEL_RESERVED = {
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
}
_ESCAPES = {"__": "__underscores__", ".": "__dot__", "-": "__dash__", "/": "__slash__"}


def escape(name: str) -> str | None:
    """The CEL field name of a property (apiservercel.Escape), or None when it has none."""
    if not name or name[0].isdigit():
        return None
    if name in CEL_RESERVED:
        return f"__{name}__"
    if not re.fullmatch(r"[A-Za-z0-9_./-]+", name):
        return None
    return re.sub(r"__|[-./]", lambda m: _ESCAPES[m.group(0)], name)


def _string_max(schema: Schema) -> int:
    if "maxLength" in schema:
        return max(0, int(schema["maxLength"])) * 4  # maxLength counts runes, up to 4 bytes each
    if schema.get("enum"):
        return max(len(v) for v in schema["enum"] if isinstance(v, str))
    return MAX_REQUEST_SIZE_BYTES - 2


def with_type_and_object_meta(schema: Schema) -> Schema:
    """WithTypeAndObjectMeta: at a resource root apiVersion, kind and metadata.name/generateName exist.

    The schema is kept when it already declares all four as strings; otherwise they are
    replaced by plain (unbounded) strings.
    """
    props = schema.get("properties") or {}
    meta = props.get("metadata") or {}
    meta_props = meta.get("properties") or {}
    if (
        props.get("kind", {}).get("type") == "string"
        and props.get("apiVersion", {}).get("type") == "string"
        and meta.get("type") == "object"
        and meta_props.get("name", {}).get("type") == "string"
        and meta_props.get("generateName", {}).get("type") == "string"
    ):
        return schema
    string = {"type": "string"}
    metadata = {"type": "object", "properties": {"name": string, "generateName": string}}
    return {**schema, "properties": {**props, "kind": string, "apiVersion": string, "metadata": metadata}}


def decl_type(schema: Schema | None, is_root: bool = False) -> DeclType | None:
    """The type CEL gets for a value of ``schema`` (SchemaDeclType), or None if it gets none."""
    if schema is None:
        return None
    if schema.get("x-kubernetes-int-or-string"):
        limit = _string_max(schema) if "maxLength" in schema else MAX_REQUEST_SIZE_BYTES - 2
        return DeclType("dyn", max_elements=limit, min_size=1)
    if is_root:
        schema = with_type_and_object_meta(schema)
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items")
        if not isinstance(items, dict):
            return None
        elem = decl_type(items, bool(items.get("x-kubernetes-embedded-resource")))
        if elem is None:
            return None
        if "maxItems" in schema:
            count = max(0, int(schema["maxItems"]))
        else:
            count = (MAX_REQUEST_SIZE_BYTES - 2) // (elem.min_size + 1)
        return DeclType("list", max_elements=count, min_size=2, elem=elem, imprecise=elem.kind in ("list", "map"))
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            elem = decl_type(extra, bool(extra.get("x-kubernetes-embedded-resource")))
            if elem is None:
                return None
            if "maxProperties" in schema:
                count = max(0, int(schema["maxProperties"]))
            else:
                count = (MAX_REQUEST_SIZE_BYTES - 2) // (elem.min_size + 6)
            return DeclType("map", max_elements=count, min_size=2, elem=elem, imprecise=elem.kind in ("list", "map"))
        fields: dict[str, DeclType] = {}
        required = set(schema.get("required") or [])
        min_size = 2
        for name, prop in (schema.get("properties") or {}).items():
            field_type = decl_type(prop, bool(prop.get("x-kubernetes-embedded-resource")))
            if field_type is None:
                continue
            escaped = escape(name)
            if escaped is not None:
                fields[escaped] = field_type
            if name in required and "default" not in prop:
                min_size += len(name) + field_type.min_size + 4
        return DeclType("object", min_size=min_size, fields=fields)
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "byte":
            limit = max(0, int(schema["maxLength"])) if "maxLength" in schema else MAX_REQUEST_SIZE_BYTES - 2
            return DeclType("bytes", max_elements=limit, min_size=MIN_STRING_SIZE)
        if fmt == "duration":
            return DeclType("duration", max_elements=MAX_DURATION_SIZE_JSON, min_size=MIN_DURATION_SIZE_JSON)
        if fmt == "date":
            return DeclType("timestamp", max_elements=JSON_DATE_SIZE, min_size=JSON_DATE_SIZE)
        if fmt == "date-time":
            return DeclType("timestamp", max_elements=MAX_DATETIME_SIZE_JSON, min_size=MIN_DATETIME_SIZE_JSON)
        return DeclType("string", max_elements=_string_max(schema), min_size=MIN_STRING_SIZE)
    if kind == "boolean":
        return DeclType("bool", min_size=MIN_BOOL_SIZE)
    if kind == "number":
        return DeclType("double", min_size=MIN_NUMBER_SIZE)
    if kind == "integer":
        return DeclType("int", min_size=MIN_NUMBER_SIZE)
    return None


def fields_of(schema: Schema, is_root: bool = True) -> dict[str, Any]:
    """The CEL field tree of a schema, for reading and for tests: ``{"spec": {"budget": {...}}}``."""

    def tree(t: DeclType | None) -> Any:
        if t is None:
            return None
        if t.is_object:
            return {name: tree(f) for name, f in t.fields.items()}
        if t.kind in ("list", "map"):
            return {"@" + t.kind: tree(t.elem)}
        return t.kind

    return tree(decl_type(schema, is_root))


# --------------------------------------------------------------------------- protobuf types for the checker

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
    "bool": _F.TYPE_BOOL,
    "double": _F.TYPE_DOUBLE,
    "int": _F.TYPE_INT64,
}
_WELL_KNOWN = {
    "timestamp": ".google.protobuf.Timestamp",
    "duration": ".google.protobuf.Duration",
    "dyn": ".google.protobuf.Value",
}
_CEL_SCALARS = {
    "string": cel.Type.STRING,
    "bytes": cel.Type.BYTES,
    "bool": cel.Type.BOOL,
    "double": cel.Type.DOUBLE,
    "int": cel.Type.INT,
    "dyn": cel.Type.DYN,
    "timestamp": cel.Type.TIMESTAMP,
    "duration": cel.Type.DURATION,
}
_COUNTER = itertools.count()


class ProtoTypes:
    """Protobuf messages for the object types of one or more DeclTypes, in a private pool.

    An object is a proto3 message whose scalar fields are ``optional`` (so ``has()`` tests
    presence as the API server does), lists are repeated fields, maps are map fields, dyn is
    google.protobuf.Value, timestamp and duration are the well-known types.
    """

    def __init__(self, roots: list[DeclType]) -> None:
        self.package = f"kubenas.celcheck{next(_COUNTER)}"
        self.file = descriptor_pb2.FileDescriptorProto(
            name=f"{self.package}.proto",
            package=self.package,
            syntax="proto3",
            dependency=[
                "google/protobuf/struct.proto",
                "google/protobuf/timestamp.proto",
                "google/protobuf/duration.proto",
            ],
        )
        self.names: dict[int, str] = {}
        for root in roots:
            self._declare(root)
        self.pool = descriptor_pool.DescriptorPool()
        for module in (struct_pb2, timestamp_pb2, duration_pb2):
            self.pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
        self.pool.Add(self.file)

    def _declare(self, t: DeclType) -> None:
        if t.kind in ("list", "map") and t.elem is not None:
            self._declare(t.elem)
        if not t.is_object or id(t) in self.names:
            return
        name = f"Object{len(self.names)}"
        self.names[id(t)] = name
        message = self.file.message_type.add(name=name)
        for number, (field_name, field_type) in enumerate(sorted(t.fields.items()), start=1):
            self._declare(field_type)
            self._field(message, field_name, number, field_type)

    def _type_name(self, t: DeclType) -> tuple[int, str]:
        """The proto type of a singular value of ``t`` (nested lists and maps become dyn containers)."""
        if t.kind in _SCALARS:
            return _SCALARS[t.kind], ""
        if t.kind in _WELL_KNOWN:
            return _F.TYPE_MESSAGE, _WELL_KNOWN[t.kind]
        if t.kind == "list":
            return _F.TYPE_MESSAGE, ".google.protobuf.ListValue"
        if t.kind == "map":
            return _F.TYPE_MESSAGE, ".google.protobuf.Struct"
        return _F.TYPE_MESSAGE, f".{self.package}.{self.names[id(t)]}"

    def _field(self, message: Any, name: str, number: int, t: DeclType) -> None:
        if t.kind == "map":
            assert t.elem is not None
            entry = message.nested_type.add(name=map_entry_name(name))
            entry.options.map_entry = True
            _add_field(entry, "key", 1, _F.TYPE_STRING)
            _add_field(entry, "value", 2, *self._type_name(t.elem))
            type_name = f".{self.package}.{message.name}.{entry.name}"
            _add_field(message, name, number, _F.TYPE_MESSAGE, type_name, repeated=True)
        elif t.kind == "list":
            assert t.elem is not None
            _add_field(message, name, number, *self._type_name(t.elem), repeated=True)
        else:
            _add_field(message, name, number, *self._type_name(t))

    def cel_type(self, t: DeclType) -> cel.Type:
        """The CEL type of a variable of type ``t``."""
        if t.kind in _CEL_SCALARS:
            return _CEL_SCALARS[t.kind]
        if t.kind == "list":
            assert t.elem is not None
            return cel.Type.List(self.cel_type(t.elem))
        if t.kind == "map":
            assert t.elem is not None
            return cel.Type.Map(cel.Type.STRING, self.cel_type(t.elem))
        return cel.Type(f"{self.package}.{self.names[id(t)]}")


def _add_field(message: Any, name: str, number: int, kind: int, type_name: str = "", repeated: bool = False) -> None:
    """A proto3 field; a scalar one is ``optional`` (it tracks presence, so ``has()`` means "set")."""
    label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    field = message.field.add(name=name, number=number, label=label, type=kind, **type_name_arg(type_name))
    field.json_name = f"f{number}"  # distinct, whatever the property names look like
    if kind != _F.TYPE_MESSAGE and not repeated and not message.options.map_entry:
        message.oneof_decl.add(name=f"_{name}")
        field.proto3_optional = True
        field.oneof_index = len(message.oneof_decl) - 1


def _cross_type_comparisons() -> cel.CelExtension:
    """cel.CrossTypeNumericComparisons(true): ordering between int, uint and double (Kubernetes ≥ 1.28)."""
    numeric = {"int64": cel.Type.INT, "uint64": cel.Type.UINT, "double": cel.Type.DOUBLE}
    operators = {"_<_": "less", "_<=_": "less_equals", "_>_": "greater", "_>=_": "greater_equals"}
    declarations = [
        cel.FunctionDecl(
            operator,
            [
                cel.Overload(f"{prefix}_{a}_{b}", cel.Type.BOOL, [ta, tb])
                for a, ta in numeric.items()
                for b, tb in numeric.items()
                if a != b
            ],
        )
        for operator, prefix in operators.items()
    ]
    return cel.CelExtension("kubernetes_cross_type_numeric_comparisons", declarations)


def new_env(types: ProtoTypes, self_type: DeclType) -> cel.Env:
    """A CEL environment declared as the API server declares it for rules on ``self_type``."""
    variable = types.cel_type(self_type)
    return cel.NewEnv(
        types.pool,
        variables={"self": variable, "oldSelf": variable},
        extensions=[
            ext_strings.ExtStrings(),
            ext_math.ExtMath(),
            ext_bindings.ExtBindings(),
            ext_optional.ExtOptional(),
            _cross_type_comparisons(),
        ],
    )


# --------------------------------------------------------------------------- the CRD


@dataclass(frozen=True)
class RuleSite:
    """One x-kubernetes-validations entry and where it sits."""

    path: str  # e.g. .spec.parameters[*]
    schema: Schema
    rule: Schema
    cardinality: int | None  # times it can run per object; None: under an unbounded list or map


@dataclass
class RuleResult:
    """What the API server makes of one rule."""

    site: RuleSite
    errors: list[str] = field(default_factory=list)
    call_cost: int = 0  # the estimated cost of one evaluation (cel.EstimateCost's max)
    cost: int = 0  # times the cardinality: what StaticEstimatedCostLimit bounds

    @property
    def label(self) -> str:
        return f"{self.site.path or '.'}: {self.site.rule.get('rule', '')!r}"


def _max_elements(schema: Schema) -> int | None:
    """extractMaxElements: how many children a node has at most (None: unbounded)."""
    kind = schema.get("type")
    if kind == "object":
        if "additionalProperties" in schema:
            return schema.get("maxProperties")
        return 1
    if kind == "array":
        return schema.get("maxItems")
    return 1


def _child_cardinality(parent: int | None, schema: Schema) -> int | None:
    if parent is None:
        return None
    limit = _max_elements(schema)
    return None if limit is None else saturated(parent * limit)


def rule_sites(schema: Schema, path: str = "", cardinality: int | None = 1) -> Iterator[RuleSite]:
    """Every rule of a schema with its path and cardinality, as the API server walks the schema."""
    for rule in schema.get("x-kubernetes-validations") or []:
        yield RuleSite(path, schema, rule, cardinality)
    for name, prop in (schema.get("properties") or {}).items():
        yield from rule_sites(prop, f"{path}.{name}", _child_cardinality(cardinality, schema))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from rule_sites(extra, f"{path}[*]", _child_cardinality(cardinality, schema))
    items = schema.get("items")
    if isinstance(items, dict):
        yield from rule_sites(items, f"{path}[*]", _child_cardinality(cardinality, schema))


def _site_type(site: RuleSite, root: Schema) -> DeclType | None:
    return decl_type(site.schema, site.schema is root or bool(site.schema.get("x-kubernetes-embedded-resource")))


def _compile(env: cel.Env, expression: str, want: str, result: RuleResult, root: DeclType) -> int:
    """Compile one expression; record problems; return its estimated max cost."""
    try:
        compiled = env.compile(expression)
    except Exception as error:  # the checker's issues, as cel-go reports them: "compilation failed: ..."
        detail = re.sub(r"\s*\[INVALID_ARGUMENT\]\s*$", "", str(error).removeprefix("INVALID_ARGUMENT: "))
        result.errors.append(f"compilation failed: {detail}")
        return 0
    returned = compiled.return_type()
    if returned != (cel.Type.BOOL if want == "bool" else cel.Type.STRING):
        result.errors.append(f"cel expression must evaluate to a {want}, not {returned.name()}")
    ast = checked_ast(compiled)
    result.errors.extend(ast_problems(ast))
    return estimate_cost(ast, root).hi


@dataclass
class CrdCheck:
    """The API server's verdict on the rules of one CRD version's schema."""

    rules: list[RuleResult]
    total_cost: int
    imprecise: list[str]

    @property
    def errors(self) -> list[str]:
        found = [f"{r.label}: {e}" for r in self.rules for e in r.errors]
        if self.total_cost > STATIC_ESTIMATED_CRD_COST_LIMIT:
            found.append(
                f"x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by "
                f"factor of {self.total_cost / STATIC_ESTIMATED_CRD_COST_LIMIT:.3g}x "
                f"({self.total_cost} > {STATIC_ESTIMATED_CRD_COST_LIMIT})"
            )
        return found


def _imprecise_paths(t: DeclType | None, path: str = "") -> Iterator[str]:
    if t is None:
        return
    if t.imprecise:
        yield path
    for name, f in t.fields.items():
        yield from _imprecise_paths(f, f"{path}.{name}")
    if t.elem is not None:
        yield from _imprecise_paths(t.elem, f"{path}[*]")


def check_crd(schema: Schema) -> CrdCheck:
    """Compile and cost every rule of an openAPIV3Schema the way the API server does on create."""
    sites = list(rule_sites(schema))
    typed = [(site, _site_type(site, schema)) for site in sites]
    types = ProtoTypes([t for _, t in typed if t is not None])
    results = []
    total = 0
    for site, site_type in typed:
        result = RuleResult(site)
        results.append(result)
        if site_type is None:
            result.errors.append("internal error: failed to construct type information for x-kubernetes-validations")
            continue
        env = new_env(types, site_type)
        rule = site.rule
        result.errors.extend(_entry_problems(rule))
        if not str(rule.get("rule", "")).strip():
            continue
        call = _compile(env, rule["rule"], "bool", result, site_type)
        message_call = (
            _compile(env, rule["messageExpression"], "string", result, site_type)
            if rule.get("messageExpression")
            else 0
        )
        cardinality = site.cardinality
        if cardinality is None:
            cardinality = MAX_REQUEST_SIZE_BYTES // (site_type.min_size + 1)
        result.call_cost = call
        result.cost = saturated(call * cardinality) if call else 0
        message_cost = saturated(message_call * cardinality) if message_call else 0
        for name, cost in (("rule", result.cost), ("messageExpression", message_cost)):
            if cost > STATIC_ESTIMATED_COST_LIMIT:
                result.errors.append(
                    f"estimated {name} cost exceeds budget by factor of {cost / STATIC_ESTIMATED_COST_LIMIT:.3g}x "
                    f"(try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, "
                    f"maps, and strings are declared) ({cost} > {STATIC_ESTIMATED_COST_LIMIT})"
                )
        total = saturated(total + result.cost + message_cost)
    imprecise = sorted({p for _, t in typed for p in _imprecise_paths(t)})
    return CrdCheck(results, total, imprecise)


def _entry_problems(rule: Schema) -> list[str]:
    """The checks on a rule's other keys (apiextensions validation.go)."""
    problems = []
    message = rule.get("message")
    if message is not None and not str(message).strip():
        problems.append("message: must be non-empty if specified")
    if message is not None and ("\n" in str(message).strip() or "\r" in str(message).strip()):
        problems.append("message: must not contain line breaks")
    if "\n" in str(rule.get("rule", "")).strip() and not str(message or "").strip():
        problems.append("message: message must be specified if rule contains line breaks")
    if "reason" in rule and rule["reason"] not in SUPPORTED_REASONS:
        problems.append(f"reason: Unsupported value: {rule['reason']!r}")
    if "messageExpression" in rule and not str(rule["messageExpression"]).strip():
        problems.append("messageExpression: must be non-empty if specified")
    return problems
