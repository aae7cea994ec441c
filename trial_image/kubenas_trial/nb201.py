"""The NAS-Bench-201 cell space: its operations, edges and architecture strings (no torch).

A cell is a DAG of 4 nodes; node ``j`` sums one operation applied to every earlier node
``i < j``, so there are 6 edges, each one of 5 operations (5**6 = 15,625 cells). The
architecture string names the operation of every edge grouped by target node, e.g.::

    |nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|

(``op~i`` is the edge from node ``i``). Edges are numbered in the order they appear there.
"""

from __future__ import annotations

from collections.abc import Sequence

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
"""The operations, in the order their indices (``cell_op_<edge>`` metrics) refer to."""
NODES = 4
EDGES: tuple[tuple[int, int], ...] = tuple((j, i) for j in range(1, NODES) for i in range(j))
"""(target node, source node) of every edge, in architecture-string order."""
PARAMETER_FREE = ("none", "skip_connect")
"""Operations whose share in a derived cell shows a collapse (no learnable weights, no pooling)."""


class ArchError(ValueError):
    """A malformed architecture string; the message names the field and what is wrong."""


def parse_arch(text: str, field: str = "cell") -> tuple[str, ...]:
    """The 6 edge operations of an architecture string, in edge order.

    Raises:
        ArchError: the string is not ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` with known operations.
    """
    expected = format_arch(["op"] * len(EDGES)).replace("op", "<op>")
    if not isinstance(text, str):
        raise ArchError(f"parameter {field!r} must be an architecture string like {expected}, got {text!r}")
    nodes = text.strip().split("+")
    if len(nodes) != NODES - 1:
        raise ArchError(f"parameter {field!r} must have {NODES - 1} node groups separated by '+' "
                        f"({expected}), got {len(nodes)} in {text!r}")
    ops: list[str] = []
    for j, group in enumerate(nodes, start=1):
        if not (group.startswith("|") and group.endswith("|")):
            raise ArchError(f"parameter {field!r}: node {j} group {group!r} must start and end with '|'")
        entries = group[1:-1].split("|")
        if len(entries) != j:
            raise ArchError(f"parameter {field!r}: node {j} needs {j} edge(s) (op~0 … op~{j - 1}), "
                            f"got {len(entries)} in {group!r}")
        for i, entry in enumerate(entries):
            op, sep, source = entry.partition("~")
            if not sep or source != str(i):
                raise ArchError(f"parameter {field!r}: edge {entry!r} of node {j} must be '<op>~{i}'")
            if op not in OPS:
                raise ArchError(f"parameter {field!r}: unknown operation {op!r} on edge {i}->{j}; "
                                f"one of {', '.join(OPS)}")
            ops.append(op)
    return tuple(ops)


def format_arch(ops: Sequence[str]) -> str:
    """The architecture string of 6 edge operations given in edge order."""
    if len(ops) != len(EDGES):
        raise ArchError(f"a cell has {len(EDGES)} edges, got {len(ops)} operations")
    groups: dict[int, list[str]] = {}
    for (j, i), op in zip(EDGES, ops, strict=True):
        groups.setdefault(j, []).append(f"{op}~{i}")
    return "+".join("|" + "|".join(groups[j]) + "|" for j in range(1, NODES))


def share(ops: Sequence[str], names: Sequence[str]) -> float:
    """The fraction of edges whose operation is one of ``names``."""
    return sum(op in names for op in ops) / len(ops)
