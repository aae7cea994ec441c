"""Search spaces: an Experiment's parameters as a Nevergrad parametrization, and back.

Nevergrad sees one ``ng.p.Dict`` with a child per parameter: ``Scalar`` (linear) or ``Log``
bounds for numbers, integer casting for ints, and a ``Choice`` (``TransitionChoice`` for
ordered numbers) over the *indices* of a categorical's values. Indices, not the values
themselves, because YAML values mix types Python compares loosely (``True == 1 == 1.0``):
the index keeps a categorical's value exactly as written.

A parameter with ``when`` is only active when each named parameter is active and takes one
of the listed values. Nevergrad still carries a value for it (its dimension never goes
away); ``decode`` leaves inactive parameters out, and ``key`` ignores them, so two
candidates differing only in inactive dimensions are the same configuration.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nevergrad as ng
import numpy as np

from kubenas import api

ParameterValue = bool | int | float | str
Config = dict[str, ParameterValue]

# Enumerating controller branches beyond this is pointless: such a space never runs out.
_MAX_BRANCHES = 100_000
# Widens integer bounds so that rounding gives the end values the same mass as the others.
_INT_HALF_WIDTH = 0.4999
_FLOAT_DIGITS = 12


def _same_value(a: object, b: object) -> bool:
    """Equality that keeps bools apart from numbers (``True`` is not ``1`` here)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    return type(a) is type(b) and a == b


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class _Dim:
    """One parameter, resolved: bounds as numbers, choices as a tuple, conditions in order."""

    name: str
    kind: api.ParameterType
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    values: tuple[ParameterValue, ...] = ()
    when: tuple[tuple[str, tuple[ParameterValue, ...]], ...] = ()

    @property
    def size(self) -> int | None:
        """Number of distinct values, None when continuous."""
        if self.kind is api.ParameterType.CATEGORICAL:
            return len(self.values)
        if self.kind is api.ParameterType.INT:
            return int(self.high) - int(self.low) + 1
        return None

    @property
    def ordered(self) -> bool:
        """Numeric choices listed in increasing or decreasing order: neighbours are similar."""
        if len(self.values) < 3 or not all(_is_number(v) for v in self.values):
            return False
        nums = [float(v) for v in self.values]
        steps = [b - a for a, b in itertools.pairwise(nums)]
        return all(s > 0 for s in steps) or all(s < 0 for s in steps)

    def index(self, value: object) -> int:
        """Index of ``value`` among a categorical's values: exact type first, then numerically."""
        for i, v in enumerate(self.values):
            if type(v) is type(value) and v == value:
                return i
        for i, v in enumerate(self.values):
            if _same_value(v, value):
                return i
        raise ValueError(f"{self.name}: {value!r} is not one of {list(self.values)!r}")

    def normalise(self, value: object) -> ParameterValue:
        """``value`` in this parameter's own type (ints as int, floats as float, choices as written)."""
        if self.kind is api.ParameterType.CATEGORICAL:
            return self.values[self.index(value)]
        if not _is_number(value) or not math.isfinite(float(value)):  # type: ignore[arg-type]
            raise ValueError(f"{self.name}: {value!r} is not a finite number")
        if self.kind is api.ParameterType.INT:
            if float(value) != round(float(value)):  # type: ignore[arg-type]
                raise ValueError(f"{self.name}: {value!r} is not an integer")
            return round(float(value))  # type: ignore[arg-type]
        return float(value)  # type: ignore[arg-type]

    def in_bounds(self, value: ParameterValue) -> bool:
        if self.kind is api.ParameterType.CATEGORICAL:
            return True
        return self.low <= float(value) <= self.high

    def default(self) -> ParameterValue:
        """A fixed in-range value, carried by Nevergrad for an inactive parameter."""
        if self.kind is api.ParameterType.CATEGORICAL:
            return self.values[0]
        mid = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
        if self.kind is api.ParameterType.INT:
            return min(int(self.high), max(int(self.low), round(mid)))
        return float(mid)

    def _int_bounds(self) -> tuple[float, float]:
        """Integer bounds widened by almost half a step, so rounding gives every value its share."""
        low = self.low - _INT_HALF_WIDTH
        if self.log:
            low = max(low, self.low / 2)
        return low, self.high + _INT_HALF_WIDTH

    def parameter(self) -> ng.p.Parameter:
        if self.kind is api.ParameterType.CATEGORICAL:
            indices = list(range(len(self.values)))
            return ng.p.TransitionChoice(indices) if self.ordered else ng.p.Choice(indices)
        low, high = self._int_bounds() if self.kind is api.ParameterType.INT else (self.low, self.high)
        param = ng.p.Log(lower=low, upper=high) if self.log else ng.p.Scalar(lower=low, upper=high)
        if self.kind is api.ParameterType.INT:
            param.set_integer_casting()
        return param

    def decode(self, raw: Any) -> ParameterValue:
        """The typed value of Nevergrad's ``raw`` value for this parameter."""
        if self.kind is api.ParameterType.CATEGORICAL:
            return self.values[int(raw)]
        value = float(raw)
        if self.kind is api.ParameterType.INT:
            return min(int(self.high), max(int(self.low), round(value)))
        # Nevergrad stores log(x) or a rescaled x, so x comes back a few ulps off; 12 significant
        # digits make encode/decode round-trip exactly, and no training run can tell the difference.
        return min(self.high, max(self.low, float(f"{value:.{_FLOAT_DIGITS}g}")))

    def encode(self, value: ParameterValue) -> Any:
        if self.kind is api.ParameterType.CATEGORICAL:
            return self.index(value)
        return value

    def sample(self, rng: np.random.Generator) -> ParameterValue:
        if self.kind is api.ParameterType.CATEGORICAL:
            return self.values[int(rng.integers(len(self.values)))]
        if self.kind is api.ParameterType.INT:
            if self.log:
                low, high = self._int_bounds()
                return self.decode(math.exp(rng.uniform(math.log(low), math.log(high))))
            return int(rng.integers(int(self.low), int(self.high) + 1))
        if self.log:
            return self.decode(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return self.decode(rng.uniform(self.low, self.high))

    def choices(self) -> list[ParameterValue]:
        """Every value of a discrete parameter, in order."""
        if self.kind is api.ParameterType.CATEGORICAL:
            return list(self.values)
        return list(range(int(self.low), int(self.high) + 1))


def _resolve(p: api.Parameter) -> _Dim:
    when = tuple((name, tuple(vals)) for name, vals in sorted((p.when or {}).items()))
    if p.type is api.ParameterType.CATEGORICAL:
        if not p.values:
            raise ValueError(f"{p.name}: a categorical parameter needs values")
        return _Dim(p.name, p.type, values=tuple(p.values), when=when)
    if p.min is None or p.max is None:
        raise ValueError(f"{p.name}: an {p.type.value} parameter needs min and max")
    low, high = float(p.min), float(p.max)
    if p.type is api.ParameterType.INT:
        low, high = float(math.ceil(low)), float(math.floor(high))
    log = p.scale is api.Scale.LOG
    if log and low <= 0:
        raise ValueError(f"{p.name}: log scale needs min > 0")
    if not low < high:
        if p.type is api.ParameterType.INT and low == high:
            return _Dim(p.name, api.ParameterType.CATEGORICAL, values=(int(low),), when=when)
        raise ValueError(f"{p.name}: min must be smaller than max")
    return _Dim(p.name, p.type, low, high, log, when=when)


def _topological(dims: Sequence[_Dim]) -> list[_Dim]:
    """Parameters ordered so that every parameter comes after those its ``when`` names."""
    by_name = {d.name: d for d in dims}
    order: list[_Dim] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(d: _Dim, path: tuple[str, ...]) -> None:
        if state.get(d.name) == 2:
            return
        if state.get(d.name) == 1:
            raise ValueError(f"{d.name}: conditions form a cycle ({' -> '.join((*path, d.name))})")
        state[d.name] = 1
        for other, _ in d.when:
            if other not in by_name:
                raise ValueError(f"{d.name}: when names unknown parameter {other!r}")
            visit(by_name[other], (*path, d.name))
        state[d.name] = 2
        order.append(d)

    for d in dims:
        visit(d, ())
    return order


class SearchSpace:
    """An Experiment's parameters as a Nevergrad parametrization, with typed decoding.

    Args:
        parameters: the Experiment's ``spec.parameters``.

    Raises:
        ValueError: a parameter is malformed (no values, bad bounds, a ``when`` cycle).

    Example:
        >>> space = SearchSpace([api.Parameter(name="depth", type="int", min=1, max=4),
        ...                      api.Parameter(name="act", type="categorical", values=["relu", "gelu"])])
        >>> space.cardinality
        8
        >>> param = space.parametrization(seed=0)
        >>> config = space.decode(param.spawn_child(new_value=space.encode({"depth": 2, "act": "gelu"})).value)
        >>> config == {"depth": 2, "act": "gelu"}
        True
    """

    def __init__(self, parameters: Sequence[api.Parameter]) -> None:
        if not parameters:
            raise ValueError("a search space needs at least one parameter")
        names = [p.name for p in parameters]
        if len(set(names)) != len(names):
            raise ValueError("parameter names must be unique")
        self._dims = _topological([_resolve(p) for p in parameters])
        self._by_name = {d.name: d for d in self._dims}
        self._order = names  # the spec's order, for decoded configs
        controllers = {other for d in self._dims for other, _ in d.when}
        self._controllers = [d for d in self._dims if d.name in controllers]
        self._leaves = [d for d in self._dims if d.name not in controllers]
        self._cardinality = self._count()

    @property
    def names(self) -> list[str]:
        """Parameter names in the spec's order."""
        return list(self._order)

    @property
    def cardinality(self) -> int | None:
        """Number of distinct configurations, None when any parameter is continuous."""
        return self._cardinality

    @property
    def conditional(self) -> bool:
        """Whether some parameter has a ``when``."""
        return bool(self._controllers)

    def parametrization(self, seed: int | None = None) -> ng.p.Parameter:
        """A fresh Nevergrad parametrization (a ``Dict``), its random state seeded with ``seed``."""
        param = ng.p.Dict(**{d.name: d.parameter() for d in self._dims})
        if seed is not None:
            param.random_state = np.random.RandomState(seed)
        return param

    # ------------------------------------------------------------------ conversions

    def _active(self, d: _Dim, config: Mapping[str, ParameterValue]) -> bool:
        return all(other in config and self._matches(other, config[other], allowed) for other, allowed in d.when)

    def _matches(self, name: str, value: ParameterValue, allowed: Sequence[ParameterValue]) -> bool:
        """Whether ``value`` (normalised) is one of ``allowed``, read as parameter ``name`` reads them."""
        ctrl = self._by_name[name]
        for option in allowed:
            try:
                option = ctrl.normalise(option)
            except ValueError:
                continue
            if type(option) is type(value) and option == value:
                return True
        return False

    def decode(self, candidate_value: Mapping[str, Any]) -> Config:
        """The configuration of a candidate's ``value``: active parameters only, typed exactly."""
        config: Config = {}
        for d in self._dims:
            if self._active(d, config):
                config[d.name] = d.decode(candidate_value[d.name])
        return {name: config[name] for name in self._order if name in config}

    def normalise(self, values: Mapping[str, Any]) -> Config:
        """``values`` typed as the space types them, inactive and unknown keys dropped.

        Raises:
            ValueError: an active parameter is missing, or its value does not fit its type or bounds.
        """
        config: Config = {}
        for d in self._dims:
            if not self._active(d, config):
                continue
            if d.name not in values:
                raise ValueError(f"{d.name}: missing value")
            value = d.normalise(values[d.name])
            if not d.in_bounds(value):
                raise ValueError(f"{d.name}: {value!r} is outside [{d.low:g}, {d.high:g}]")
            config[d.name] = value
        return {name: config[name] for name in self._order if name in config}

    def encode(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The candidate value of a configuration, for ``parametrization.spawn_child(new_value=...)``.

        Inactive parameters get a fixed in-range value.

        Raises:
            ValueError: as ``normalise``.
        """
        config = self.normalise(values)
        out: dict[str, Any] = {}
        for d in self._dims:
            out[d.name] = d.encode(config.get(d.name, d.default()))
        return out

    def key(self, values: Mapping[str, Any]) -> str:
        """Canonical identity of a configuration: equal for equal active values, whatever their form.

        Raises:
            ValueError: as ``normalise``.
        """
        return json.dumps(self.normalise(values), sort_keys=True, separators=(",", ":"))

    def sample(self, rng: np.random.Generator) -> Config:
        """A configuration drawn uniformly (log-uniformly on log scales), independent of Nevergrad."""
        config: Config = {}
        for d in self._dims:
            if self._active(d, config):
                config[d.name] = d.sample(rng)
        return {name: config[name] for name in self._order if name in config}

    # ------------------------------------------------------------------ finite spaces

    def _branches(self) -> Iterator[Config]:
        """Every assignment of the parameters other parameters depend on (inactive ones left out)."""

        def walk(i: int, config: Config) -> Iterator[Config]:
            if i == len(self._controllers):
                yield dict(config)
                return
            d = self._controllers[i]
            if not self._active(d, config):
                yield from walk(i + 1, config)
                return
            for value in d.choices():
                config[d.name] = value
                yield from walk(i + 1, config)
            del config[d.name]

        return walk(0, {})

    def _count(self) -> int | None:
        if any(d.kind is api.ParameterType.FLOAT for d in self._dims):
            return None
        total = 0
        for n, branch in enumerate(self._branches()):
            if n >= _MAX_BRANCHES:
                return math.prod(d.size or 1 for d in self._dims)  # an upper bound; never reached in practice
            total += math.prod(d.size or 1 for d in self._leaves if self._active(d, branch))
        return total

    def configurations(self) -> Iterator[Config]:
        """Every configuration of a finite space, in a fixed order.

        Raises:
            ValueError: the space has a continuous parameter.
        """
        if self._cardinality is None:
            raise ValueError("a space with a continuous parameter has no finite list of configurations")
        for branch in self._branches():
            active = [d for d in self._leaves if self._active(d, branch)]
            for combo in itertools.product(*(d.choices() for d in active)):
                config = dict(branch)
                config.update(zip((d.name for d in active), combo, strict=True))
                yield {name: config[name] for name in self._order if name in config}
