"""cel-go's static cost estimator, as the API server runs it, over the C++ checker's AST.

The API server estimates the worst-case cost of every rule when a CRD is created
(``cel.EstimateCost``: cel-go ``checker/cost.go``, with apiextensions' size estimator that reads
the bounds of the schema's types, and the Kubernetes library's function costs) and refuses rules
and CRDs over their limits. :func:`estimate_cost` ports that estimator to the checked AST
(cel.expr.CheckedExpr) that ``cel-expr-python`` returns, which carries the same overload ids
and the same macro expansions. ``root`` is the type of ``self`` (``cel_types.DeclType``):
``fields``, ``elem``, ``kind`` and ``max_elements`` are all the estimator reads of it.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from cel_expr_python import cel
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
UINT64_MAX = 2**64 - 1
_MAP_KEY = SimpleNamespace(kind="string", max_elements=0, fields={}, elem=None, is_object=False)


def map_entry_name(field_name: str) -> str:
    """protoc's name for a map field's entry message (the C++ descriptor pool insists on it)."""
    return "".join(part[:1].upper() + part[1:] for part in field_name.split("_")) + "Entry"


def type_name_arg(type_name: str) -> dict[str, str]:
    """``type_name=...`` for a message-typed field, nothing for a scalar one (an empty name is an error)."""
    return {"type_name": type_name} if type_name else {}


# --------------------------------------------------------------------------- the checked AST (cel.expr.CheckedExpr)


# cel.expr's syntax.proto and checked.proto, the fields read here, with their field numbers:
# ``Message: field number type, ...; oneof: field number type, ...`` (``*`` repeated, ``{}`` a map from int64).
_AST_PROTO = """
Empty:
Constant: ; null_value 1 int32, bool_value 2 bool, int64_value 3 int64, uint64_value 4 uint64, double_value 5 double,
    string_value 6 string, bytes_value 7 bytes, duration_value 8 bytes, timestamp_value 9 bytes
Expr: id 2 int64; const_expr 3 Constant, ident_expr 4 Ident, select_expr 5 Select, call_expr 6 Call,
    list_expr 7 CreateList, struct_expr 8 CreateStruct, comprehension_expr 9 Comprehension
Ident: name 1 string
Select: operand 1 Expr, field 2 string, test_only 3 bool
Call: target 1 Expr, function 2 string, args 3 Expr*
CreateList: elements 1 Expr*, optional_indices 2 int32*
Entry: id 1 int64, field_key 2 string, map_key 3 Expr, value 4 Expr, optional_entry 5 bool
CreateStruct: message_name 1 string, entries 2 Entry*
Comprehension: iter_var 1 string, iter_range 2 Expr, accu_var 3 string, accu_init 4 Expr, loop_condition 5 Expr,
    loop_step 6 Expr, result 7 Expr, iter_var2 8 string
Type: ; dyn 1 Empty, null 2 int32, primitive 3 int32, wrapper 4 int32, well_known 5 int32, list_type 6 ListType,
    map_type 7 MapType, function 8 FunctionType, message_type 9 string, type_param 10 string, type 11 Type,
    error 12 Empty, abstract_type 14 AbstractType
ListType: elem_type 1 Type
MapType: key_type 1 Type, value_type 2 Type
FunctionType: result_type 1 Type, arg_types 2 Type*
AbstractType: name 1 string, parameter_types 2 Type*
Reference: name 1 string, overload_id 3 string*, value 4 Constant
CheckedExpr: reference_map 2 Reference{}, type_map 3 Type{}, expr 4 Expr
"""
_PROTO_SCALARS = {"string": _F.TYPE_STRING, "int64": _F.TYPE_INT64, "uint64": _F.TYPE_UINT64, "bool": _F.TYPE_BOOL,
                  "double": _F.TYPE_DOUBLE, "bytes": _F.TYPE_BYTES, "int32": _F.TYPE_INT32}  # fmt: skip


def _ast_pool() -> descriptor_pool.DescriptorPool:
    """A pool with the messages of :data:`_AST_PROTO` (wire-compatible with cel.expr's)."""
    file = descriptor_pb2.FileDescriptorProto(name="celast.proto", package="celast", syntax="proto3")

    def add(message: Any, spec: str, oneof: int | None) -> None:
        name, number, kind = spec.split()
        label = _F.LABEL_REPEATED if kind.endswith(("*", "{}")) else _F.LABEL_OPTIONAL
        kind = kind.rstrip("*{}")
        if spec.endswith("{}"):
            entry = message.nested_type.add(name=map_entry_name(name))
            entry.options.map_entry = True
            add(entry, "key 1 int64", None)
            add(entry, f"value 2 {kind}", None)
            kind, type_name = "", f".celast.{message.name}.{entry.name}"
        else:
            type_name = "" if kind in _PROTO_SCALARS else f".celast.{kind}"
        field = message.field.add(
            name=name, number=int(number), label=label, type=_PROTO_SCALARS.get(kind, _F.TYPE_MESSAGE),
            **type_name_arg(type_name),
        )  # fmt: skip
        if oneof is not None:
            field.oneof_index = oneof

    for declaration in re.sub(r"\n\s+", " ", _AST_PROTO).strip().splitlines():
        name, body = declaration.split(":", 1)
        message = file.message_type.add(name=name)
        plain, _, alternatives = body.partition(";")
        for spec in filter(str.strip, plain.split(",")):
            add(message, spec, None)
        if alternatives.strip():
            message.oneof_decl.add(name="kind")
            for spec in filter(str.strip, alternatives.split(",")):
                add(message, spec, 0)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return pool


@functools.cache
def _checked_expr_class() -> Any:
    return message_factory.GetMessageClass(_ast_pool().FindMessageTypeByName("celast.CheckedExpr"))


def checked_ast(expression: cel.Expression) -> Any:
    """The checked AST (cel.expr.CheckedExpr) of a compiled expression."""
    wrapper = any_pb2.Any.FromString(expression.serialize())
    if not wrapper.type_url.endswith("cel.expr.CheckedExpr"):
        raise AssertionError(f"not a checked expression: {wrapper.type_url}")
    return _checked_expr_class().FromString(wrapper.value)


def type_kind(t: Any) -> str:
    """cel-go's Kind of a checked type: bool, int, uint, double, string, bytes, list, map, struct, ..."""
    which = t.WhichOneof("kind")
    if which == "primitive":
        return {1: "bool", 2: "int", 3: "uint", 4: "double", 5: "string", 6: "bytes"}.get(t.primitive, "unspecified")
    if which == "wrapper":
        return "opaque"  # a nullable wrapper, never scalar-sized
    if which == "well_known":
        return {1: "any", 2: "timestamp", 3: "duration"}.get(t.well_known, "unspecified")
    if which == "message_type":
        return {
            "google.protobuf.Timestamp": "timestamp",
            "google.protobuf.Duration": "duration",
            "google.protobuf.Value": "dyn",
            "google.protobuf.ListValue": "list",
            "google.protobuf.Struct": "map",
        }.get(t.message_type, "struct")
    return {
        "list_type": "list",
        "map_type": "map",
        "type_param": "type_param",
        "abstract_type": "opaque",
        "type": "type",
        "null": "null",
        "error": "error",
        "function": "function",
    }.get(which, "dyn")


def type_text(t: Any) -> str:
    """A checked type written as CEL writes it (for messages)."""
    which = t.WhichOneof("kind")
    if which == "list_type":
        return f"list({type_text(t.list_type.elem_type)})"
    if which == "map_type":
        return f"map({type_text(t.map_type.key_type)}, {type_text(t.map_type.value_type)})"
    if which == "abstract_type":
        return f"{t.abstract_type.name}({', '.join(type_text(p) for p in t.abstract_type.parameter_types)})"
    if which == "message_type" and type_kind(t) == "struct":
        return "object"
    return type_kind(t)


# --------------------------------------------------------------------------- static cost (cel-go checker/cost.go)


@dataclass(frozen=True)
class Size:
    lo: int
    hi: int

    def add(self, other: Size) -> Size:
        return Size(saturated(self.lo + other.lo), saturated(self.hi + other.hi))

    def mul(self, other: Size) -> Size:
        return Size(saturated(self.lo * other.lo), saturated(self.hi * other.hi))

    def factor(self, per_unit: float) -> Size:
        return Size(_factor(self.lo, per_unit), _factor(self.hi, per_unit))

    def union(self, other: Size) -> Size:
        return Size(min(self.lo, other.lo), max(self.hi, other.hi))


Cost = Size  # cel-go's CostEstimate has the same arithmetic
UNKNOWN = Size(0, UINT64_MAX)
ZERO = Size(0, 0)
ONE = Size(1, 1)


def saturated(value: int) -> int:
    """uint64 arithmetic that stops at the largest value instead of wrapping (cel-go's NoOverflow)."""
    return min(value, UINT64_MAX)


def _factor(value: int, per_unit: float) -> int:
    product = math.ceil(float(value) * per_unit)
    return UINT64_MAX if product >= 2.0**64 else int(product)


STRING_TRAVERSAL_COST_FACTOR = 0.1
REGEX_STRING_LENGTH_COST_FACTOR = 0.25
LIST_CREATE_BASE_COST = 10
MAP_CREATE_BASE_COST = 30
STRUCT_CREATE_BASE_COST = 40
ACCUMULATORS = {"@result", "__result__", "@__result__"}
SCALAR_KINDS = {"bool", "double", "duration", "int", "timestamp", "uint"}


@dataclass
class _LocalVar:
    path: list[str] | None
    size: Size | None
    entry: tuple[str, Size, Size] | None  # (container kind, key size, value size)


@dataclass
class _Node:
    """cel-go's AstNode: what a function's cost estimate sees of an argument."""

    path: list[str] | None
    type: Any
    expr: Any
    size: Size | None


class CostEstimator:
    """``checker.Cost`` with the API server's size estimator and library costs, over a CheckedExpr."""

    def __init__(self, ast: Any, root: Any) -> None:
        self.ast = ast
        self.root = root
        self.paths: dict[int, list[str]] = {}
        self.sizes: dict[int, Size] = {}
        self.entry_sizes: dict[int, tuple[str, Size, Size]] = {}
        self.locals: dict[str, list[_LocalVar]] = {}

    # -- the API server's sizeEstimator (apiextensions schema/cel/compilation.go)
    def estimate_size(self, path: list[str] | None) -> Size | None:
        if not path:
            return None
        node: Any = self.root
        for name in path[1:]:
            if node is None:
                return None
            if name in ("@items", "@values"):
                node = node.elem
            elif name == "@keys":
                # a map's KeyType is apiservercel.StringType, whose MaxElements is 0
                node = _MAP_KEY if node.kind == "map" else None
            else:
                node = node.fields.get(name) if node.is_object else None
        return None if node is None else Size(0, node.max_elements)

    def _type(self, expr: Any) -> Any:
        return self.ast.type_map.get(expr.id)

    def _kind(self, expr: Any) -> str:
        t = self._type(expr)
        return "dyn" if t is None else type_kind(t)

    def _path(self, expr: Any) -> list[str] | None:
        if expr.WhichOneof("kind") == "ident_expr":
            local = self._peek(expr.ident_expr.name)
            if local is not None:
                return None if local.path is None else list(local.path)
        path = self.paths.get(expr.id)
        return None if path is None else list(path)

    def _peek(self, name: str) -> _LocalVar | None:
        stack = self.locals.get(name)
        return stack[-1] if stack else None

    def _push(self, name: str, var: _LocalVar) -> None:
        self.locals.setdefault(name, []).append(var)

    def _pop(self, name: str) -> None:
        self.locals[name].pop()

    def compute_size(self, expr: Any) -> Size | None:
        if expr.id in self.sizes:
            return self.sizes[expr.id]
        literal = _literal_size(expr)
        if literal is not None:
            return literal
        estimated = self.estimate_size(self._path(expr))
        if estimated is not None:
            self.sizes[expr.id] = estimated
            return estimated
        t = self._type(expr)
        if t is not None and _is_scalar(t):
            return ONE
        if expr.WhichOneof("kind") == "ident_expr":
            local = self._peek(expr.ident_expr.name)
            if local is not None and local.size is not None:
                return local.size
        return None

    def size_or_unknown(self, expr: Any) -> Size:
        return self.compute_size(expr) or UNKNOWN

    def entry_size(self, expr: Any) -> tuple[str, Size, Size] | None:
        if expr.id in self.entry_sizes:
            return self.entry_sizes[expr.id]
        if expr.WhichOneof("kind") == "ident_expr":
            local = self._peek(expr.ident_expr.name)
            if local is not None and local.entry is not None:
                return local.entry
        return None

    def _node(self, expr: Any) -> _Node:
        path = self._path(expr)
        if path and path[0] in ACCUMULATORS:
            path = None
        return _Node(path, self._type(expr), expr, self.compute_size(expr))

    # -- cost of each kind of expression
    def cost(self, expr: Any) -> Cost:
        kind = expr.WhichOneof("kind")
        if kind == "const_expr":
            return ZERO
        if kind == "ident_expr":
            local = self._peek(expr.ident_expr.name)
            self.paths[expr.id] = list(local.path or []) if local is not None else [expr.ident_expr.name]
            return ONE
        if kind == "select_expr":
            return self._select(expr)
        if kind == "call_expr":
            return self._call(expr)
        if kind == "list_expr":
            return self._list(expr)
        if kind == "struct_expr":
            return self._struct(expr)
        if kind == "comprehension_expr":
            return self._bind(expr) if self._is_bind(expr) else self._comprehension(expr)
        return ZERO

    def _select(self, expr: Any) -> Cost:
        sel = expr.select_expr
        if sel.test_only:
            return ZERO.add(self.cost(sel.operand))  # PresenceTestHasCost(false) in Kubernetes
        total = self.cost(sel.operand)
        if self._kind(sel.operand) in ("map", "struct", "type_param"):
            total = total.add(ONE)
        operand_path = self._path(sel.operand)
        self.paths[expr.id] = [*(operand_path or []), sel.field]
        return total

    def _list(self, expr: Any) -> Cost:
        elements = expr.list_expr.elements
        total = ZERO
        item = Size(UINT64_MAX, 0) if elements else ZERO
        for element in elements:
            total = total.add(self.cost(element))
            item = item.union(self.size_or_unknown(element))
        self.entry_sizes[expr.id] = ("list", ONE, item)
        return total.add(Size(LIST_CREATE_BASE_COST, LIST_CREATE_BASE_COST))

    def _struct(self, expr: Any) -> Cost:
        entries = expr.struct_expr.entries
        if expr.struct_expr.message_name:  # a message literal
            total = ZERO
            for entry in entries:
                total = total.add(self.cost(entry.value))
            return total.add(Size(STRUCT_CREATE_BASE_COST, STRUCT_CREATE_BASE_COST))
        total = ZERO
        key = Size(UINT64_MAX, 0) if entries else ZERO
        value = Size(UINT64_MAX, 0) if entries else ZERO
        for entry in entries:
            total = total.add(self.cost(entry.map_key)).add(self.cost(entry.value))
            key = key.union(self.size_or_unknown(entry.map_key))
            value = value.union(self.size_or_unknown(entry.value))
        self.entry_sizes[expr.id] = ("map", key, value)
        return total.add(Size(MAP_CREATE_BASE_COST, MAP_CREATE_BASE_COST))

    def _is_bind(self, expr: Any) -> bool:
        comp = expr.comprehension_expr
        rng, cond = comp.iter_range, comp.loop_condition
        return (
            rng.WhichOneof("kind") == "list_expr"
            and len(rng.list_expr.elements) == 0
            and cond.WhichOneof("kind") == "const_expr"
            and cond.const_expr.WhichOneof("kind") == "bool_value"
            and not cond.const_expr.bool_value
            and comp.accu_var not in ACCUMULATORS
        )

    def _bind(self, expr: Any) -> Cost:
        comp = expr.comprehension_expr
        total = self.cost(comp.iter_range).add(self.cost(comp.accu_init))
        self._push(
            comp.accu_var,
            _LocalVar(self._path(comp.accu_init), self.compute_size(comp.accu_init), self.entry_size(comp.accu_init)),
        )
        total = total.add(self.cost(comp.result))
        self._pop(comp.accu_var)
        self._copy_sizes(expr, comp.result)
        return total

    def _comprehension(self, expr: Any) -> Cost:
        comp = expr.comprehension_expr
        total = self.cost(comp.iter_range).add(self.cost(comp.accu_init))
        self._push(
            comp.accu_var,
            _LocalVar(self._path(comp.accu_init), self.compute_size(comp.accu_init), self.entry_size(comp.accu_init)),
        )
        entry = self.entry_size(comp.iter_range)
        container = entry[0] if entry is not None else self._kind(comp.iter_range)
        range_path = self._path(comp.iter_range) or []
        if comp.iter_var2:
            self._push(
                comp.iter_var,
                _LocalVar(
                    [*range_path, "@indices" if container == "list" else "@keys"], entry[1] if entry else None, None
                ),
            )
            self._push(
                comp.iter_var2,
                _LocalVar(
                    [*range_path, "@items" if container == "list" else "@values"], entry[2] if entry else None, None
                ),
            )
        elif container == "list":
            self._push(comp.iter_var, _LocalVar([*range_path, "@items"], entry[2] if entry else None, None))
        else:
            self._push(comp.iter_var, _LocalVar([*range_path, "@keys"], entry[1] if entry else None, None))
        loop = self.cost(comp.loop_condition)
        step = self.cost(comp.loop_step)
        self._pop(comp.iter_var)
        if comp.iter_var2:
            self._pop(comp.iter_var2)
        total = total.add(self.cost(comp.result))
        self._pop(comp.accu_var)
        count = self.size_or_unknown(comp.iter_range)
        total = total.add(count.mul(step.add(loop)))
        init_kind = comp.accu_init.WhichOneof("kind")
        if init_kind == "const_expr":
            size = self.compute_size(comp.accu_init)
            if size is not None:
                self.sizes[expr.id] = size
        elif init_kind == "list_expr" or (init_kind == "struct_expr" and not comp.accu_init.struct_expr.message_name):
            self.sizes[expr.id] = count
            step_entry = self.entry_size(comp.loop_step)
            if step_entry is not None:
                self.entry_sizes[expr.id] = step_entry
        return total

    def _copy_sizes(self, dst: Any, src: Any) -> None:
        size = self.compute_size(src)
        if size is not None:
            self.sizes[dst.id] = size
        entry = self.entry_size(src)
        if entry is not None:
            self.entry_sizes[dst.id] = entry

    def _call(self, expr: Any) -> Cost:
        call = expr.call_expr
        if call.function == "dyn" and len(call.args) == 1:
            arg_cost = self.cost(call.args[0])
            self._copy_sizes(expr, call.args[0])
            return ONE.add(arg_cost)
        arg_costs = [self.cost(arg) for arg in call.args]
        arg_nodes = [self._node(arg) for arg in call.args]
        reference = self.ast.reference_map.get(expr.id)
        overloads = list(reference.overload_id) if reference is not None else []
        if not overloads:
            return ZERO
        total = ZERO
        target = None
        if call.HasField("target"):
            total = total.add(self.cost(call.target))
            target = self._node(call.target)
        function_cost = Size(UINT64_MAX, 0)
        result: Size | None = None
        for overload in overloads:
            estimate, size = self._function_cost(expr, call.function, overload, target, arg_nodes, arg_costs)
            function_cost = function_cost.union(estimate)
            if size is not None:
                result = size if result is None else result.union(size)
            if overload in ("index_list", "index_map") and call.args:
                entry = self.entry_size(call.args[0])
                result = entry[2] if entry else None
                arg_path = self._path(call.args[0]) or []
                self.paths[expr.id] = [*arg_path, "@items" if overload == "index_list" else "@values"]
            if result is None:
                result = self.compute_size(expr)
        if result is not None:
            self.sizes[expr.id] = result
        return total.add(function_cost)

    def _function_cost(
        self, expr: Any, function: str, overload: str, target: _Node | None, args: list[_Node], arg_costs: list[Cost]
    ) -> tuple[Cost, Size | None]:
        arg_sum = ZERO
        for c in arg_costs:
            arg_sum = arg_sum.add(c)
        library = self._library_cost(function, target, args)
        if library is not None:
            return library[0].add(arg_sum), library[1]

        def size(node: _Node) -> Size:
            return node.size or UNKNOWN

        if overload in ("starts_with_string", "ends_with_string") and len(args) == 1:
            return size(args[0]).factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum), None
        if overload == "in_list" and len(args) == 2:
            return size(args[1]).factor(1).add(arg_sum), None
        if overload == "matches_string" and target is not None and len(args) == 1:
            string = size(target).add(ONE).factor(STRING_TRAVERSAL_COST_FACTOR)
            regex = size(args[0]).factor(REGEX_STRING_LENGTH_COST_FACTOR)
            return string.mul(regex).add(arg_sum), None
        if overload == "contains_string" and target is not None and len(args) == 1:
            string = size(target).factor(STRING_TRAVERSAL_COST_FACTOR)
            sub = size(args[0]).factor(STRING_TRAVERSAL_COST_FACTOR)
            return string.mul(sub).add(arg_sum), None
        if overload in ("logical_or", "logical_and"):
            lhs, rhs = arg_costs
            return Size(lhs.lo, lhs.add(rhs).hi), None
        if overload == "conditional":
            result = size(args[1]).union(size(args[2]))
            e1, e2 = self.entry_size(args[1].expr), self.entry_size(args[2].expr)
            if e1 is not None and e2 is not None:
                self.entry_sizes[expr.id] = (e1[0], e1[1].union(e2[1]), e1[2].union(e2[2]))
            return arg_costs[0].add(arg_costs[1].union(arg_costs[2])), result
        if overload in ("add_string", "add_bytes", "add_list") and len(args) == 2:
            result = size(args[0]).add(size(args[1]))
            e1, e2 = self.entry_size(args[0].expr), self.entry_size(args[1].expr)
            if e1 is not None and e2 is not None:
                self.entry_sizes[expr.id] = (e1[0], e1[1].union(e2[1]), e1[2].union(e2[2]))
            if overload == "add_list":
                return ONE.add(arg_sum), result
            return result.factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum), result
        if overload in _SIZE_COMPARED:
            lhs, rhs = size(args[0]), size(args[1])
            smallest = min(lhs.hi, rhs.hi)
            return Size(1 if smallest > 0 else 0, smallest).factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum), None
        if overload in ("string_to_bytes", "bytes_to_string") and len(args) == 1:
            s = size(args[0])
            result = Size(s.lo, s.hi * 4) if overload == "string_to_bytes" else Size(s.lo // 4, s.hi)
            return s.factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum), result
        return ONE.add(arg_sum), None

    def _library_cost(self, function: str, target: _Node | None, args: list[_Node]) -> tuple[Cost, Size | None] | None:
        """The API server's library.CostEstimator.EstimateCallCost, for the functions declared here."""

        def size(node: _Node) -> Size:
            if node.size is not None:
                return node.size
            return self.estimate_size(node.path) or UNKNOWN

        if function in ("lowerAscii", "upperAscii", "substring", "trim") and target is not None:
            s = size(target)
            return s.factor(STRING_TRAVERSAL_COST_FACTOR), s
        if function in ("indexOf", "lastIndexOf") and target is not None and type_kind(target.type) == "string":
            return size(target).factor(STRING_TRAVERSAL_COST_FACTOR), None
        if function == "split" and target is not None:
            s = size(target)
            limit = s.hi
            if len(args) > 1 and args[1].expr.WhichOneof("kind") == "const_expr":
                limit = args[1].expr.const_expr.int64_value
            return s.factor(2 * STRING_TRAVERSAL_COST_FACTOR), Size(0, limit)
        if function == "replace" and target is not None and len(args) >= 2:
            s, old, new = size(target), size(args[0]), size(args[1])
            if old.lo == 0:
                count_hi, kept_hi = (s.hi + 1 if s.hi < UINT64_MAX else s.hi), s.hi
            elif new.hi <= old.lo:
                count_hi, kept_hi = 0, s.hi
            else:
                count_hi, kept_hi = math.ceil(s.hi / old.lo), 0
            if old.hi == 0:
                count_lo, kept_lo = (s.lo + 1 if s.lo < UINT64_MAX else s.lo), s.lo
            elif old.hi <= new.lo:
                count_lo, kept_lo = 0, s.lo
            else:
                count_lo, kept_lo = math.ceil(s.lo / old.hi), 0
            result = Size(count_lo, count_hi).mul(new).add(Size(kept_lo, kept_hi))
            return s.factor(2 * STRING_TRAVERSAL_COST_FACTOR), result
        if function == "join" and target is not None:
            items = size(target)
            joined = ZERO
            if target.type is not None and target.type.WhichOneof("kind") == "list_type":
                element = self.estimate_size([*target.path, "@items"]) if target.path else None
                joined = items.mul(element or UNKNOWN)
            if args:
                separators = Size(max(items.lo - 1, 0), max(items.hi - 1, 0))
                joined = joined.add(size(args[0]).mul(separators))
            return joined.factor(STRING_TRAVERSAL_COST_FACTOR), joined
        return None


_SIZE_COMPARED = {
    "less_string",
    "greater_string",
    "less_equals_string",
    "greater_equals_string",
    "less_bytes",
    "greater_bytes",
    "less_equals_bytes",
    "greater_equals_bytes",
    "equals",
    "not_equals",
}


def _literal_size(expr: Any) -> Size | None:
    kind = expr.WhichOneof("kind")
    if kind == "const_expr":
        constant = expr.const_expr
        which = constant.WhichOneof("kind")
        if which == "string_value":
            return Size(len(constant.string_value), len(constant.string_value))
        if which == "bytes_value":
            return Size(len(constant.bytes_value), len(constant.bytes_value))
        return ONE if which is not None else None
    if kind == "list_expr":
        n = len(expr.list_expr.elements)
        return Size(n, n)
    if kind == "struct_expr" and not expr.struct_expr.message_name:
        n = len(expr.struct_expr.entries)
        return Size(n, n)
    return None


def _is_scalar(t: Any) -> bool:
    kind = type_kind(t)
    if kind in SCALAR_KINDS:
        return True
    if t.WhichOneof("kind") == "abstract_type" and t.abstract_type.name == "optional_type":
        return all(_is_scalar(p) for p in t.abstract_type.parameter_types[:1])
    return False


def estimate_cost(ast: Any, root: Any) -> Cost:
    """The static cost range of one checked expression whose ``self`` has type ``root``."""
    return CostEstimator(ast, root).cost(ast.expr)


# --------------------------------------------------------------------------- checks the API server adds to the checker


def _walk(expr: Any) -> Iterator[Any]:
    yield expr
    kind = expr.WhichOneof("kind")
    if kind == "select_expr":
        yield from _walk(expr.select_expr.operand)
    elif kind == "call_expr":
        if expr.call_expr.HasField("target"):
            yield from _walk(expr.call_expr.target)
        for arg in expr.call_expr.args:
            yield from _walk(arg)
    elif kind == "list_expr":
        for element in expr.list_expr.elements:
            yield from _walk(element)
    elif kind == "struct_expr":
        for entry in expr.struct_expr.entries:
            if entry.HasField("map_key"):
                yield from _walk(entry.map_key)
            yield from _walk(entry.value)
    elif kind == "comprehension_expr":
        comp = expr.comprehension_expr
        for part in (comp.iter_range, comp.accu_init, comp.loop_condition, comp.loop_step, comp.result):
            yield from _walk(part)


def ast_problems(ast: Any) -> list[str]:
    """HomogeneousAggregateLiterals and ValidateRegexLiterals, which cel-go applies and the C++ checker does not."""
    problems = []
    for expr in _walk(ast.expr):
        kind = expr.WhichOneof("kind")
        if kind == "list_expr":
            types = {type_text(ast.type_map[e.id]) for e in expr.list_expr.elements if e.id in ast.type_map}
            if len(types) > 1:
                problems.append(f"list literal mixes element types {sorted(types)} (HomogeneousAggregateLiterals)")
        elif kind == "struct_expr" and not expr.struct_expr.message_name:
            for part in ("map_key", "value"):
                types = {
                    type_text(ast.type_map[getattr(e, part).id])
                    for e in expr.struct_expr.entries
                    if getattr(e, part).id in ast.type_map
                }
                if len(types) > 1:
                    problems.append(f"map literal mixes {part} types {sorted(types)} (HomogeneousAggregateLiterals)")
        elif kind == "call_expr" and expr.call_expr.function == "matches":
            pattern = expr.call_expr.args[-1] if expr.call_expr.args else None
            if pattern is not None and pattern.WhichOneof("kind") == "const_expr":
                try:
                    re.compile(pattern.const_expr.string_value)
                except re.error as error:
                    problems.append(f"invalid regex literal {pattern.const_expr.string_value!r}: {error}")
    return problems
