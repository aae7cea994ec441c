"""kubenas.space: parameters to a Nevergrad parametrization and back, typed exactly."""

from __future__ import annotations

from typing import Any

import nevergrad as ng
import numpy as np
import pytest
from kubenas import api
from kubenas.space import SearchSpace


def P(name: str, type: str, **kw: Any) -> api.Parameter:
    return api.Parameter(name=name, type=type, **kw)


MIXED = [
    P("lr", "float", min=1e-5, max=1e-1, scale="log"),
    P("wd", "float", min=0.0, max=0.1),
    P("depth", "int", min=1, max=8),
    P("width", "categorical", values=[16, 32, 64, 128]),
    P("act", "categorical", values=["relu", True, 1, 1.0]),
    P("kernel", "int", min=2, max=64, scale="log"),
]


def roundtrip(space: SearchSpace, config: dict[str, Any]) -> dict[str, Any]:
    param = space.parametrization(seed=0)
    return space.decode(param.spawn_child(new_value=space.encode(config)).value)


def test_decoded_values_keep_their_types_and_bounds() -> None:
    space = SearchSpace(MIXED)
    param = space.parametrization(seed=1)
    seen_act: set[tuple[type, Any]] = set()
    for _ in range(200):
        child = param.spawn_child()
        child.mutate()
        config = space.decode(child.value)
        assert list(config) == ["lr", "wd", "depth", "width", "act", "kernel"]
        assert type(config["lr"]) is float and 1e-5 <= config["lr"] <= 1e-1
        assert type(config["wd"]) is float and 0.0 <= config["wd"] <= 0.1
        assert type(config["depth"]) is int and 1 <= config["depth"] <= 8
        assert type(config["kernel"]) is int and 2 <= config["kernel"] <= 64
        assert config["width"] in (16, 32, 64, 128) and type(config["width"]) is int
        seen_act.add((type(config["act"]), config["act"]))
    # True, 1 and 1.0 are three distinct YAML values and all three come back as written.
    assert seen_act == {(str, "relu"), (bool, True), (int, 1), (float, 1.0)}


@pytest.mark.parametrize("act", ["relu", True, 1, 1.0])
def test_encode_decode_round_trips_exactly(act: Any) -> None:
    space = SearchSpace(MIXED)
    config = {"lr": 0.001, "wd": 0.0123, "depth": 3, "width": 64, "act": act, "kernel": 7}
    back = roundtrip(space, config)
    assert back == config
    assert [type(v) for v in back.values()] == [type(v) for v in config.values()]


def test_asked_values_round_trip_exactly() -> None:
    space = SearchSpace(MIXED)
    param = space.parametrization(seed=3)
    for _ in range(50):
        child = param.spawn_child()
        child.mutate()
        config = space.decode(child.value)
        assert roundtrip(space, config) == config
        assert space.key(roundtrip(space, config)) == space.key(config)


def test_integers_cover_their_ends_evenly() -> None:
    space = SearchSpace([P("n", "int", min=1, max=3)])
    param = space.parametrization(seed=0)
    counts = {1: 0, 2: 0, 3: 0}
    for _ in range(600):
        child = param.spawn_child()
        child.set_standardized_data(param.random_state.normal(size=1) * 3)
        counts[space.decode(child.value)["n"]] += 1
    assert min(counts.values()) > 100


def test_parametrization_uses_nevergrad_building_blocks() -> None:
    space = SearchSpace(MIXED)
    param = space.parametrization()
    assert isinstance(param, ng.p.Dict)
    assert isinstance(param["lr"], ng.p.Log)
    assert isinstance(param["width"], ng.p.TransitionChoice)  # ordered numbers
    assert isinstance(param["act"], ng.p.Choice) and not isinstance(param["act"], ng.p.TransitionChoice)
    assert param["depth"].integer


def test_seed_makes_sampling_reproducible() -> None:
    space = SearchSpace(MIXED)

    def draws(seed: int) -> list[dict[str, Any]]:
        param = space.parametrization(seed=seed)
        out = []
        for _ in range(5):
            child = param.spawn_child()
            child.mutate()
            out.append(space.decode(child.value))
        return out

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


CONDITIONAL = [
    P("model", "categorical", values=["cnn", "mlp"]),
    P("kernel", "int", min=3, max=5, when={"model": ["cnn"]}),
    P("pool", "categorical", values=["max", "avg"], when={"model": ["cnn"], "kernel": [3, 5]}),
    P("hidden", "int", min=1, max=2, when={"model": ["mlp"]}),
]


def test_inactive_parameters_are_left_out() -> None:
    space = SearchSpace(CONDITIONAL)
    assert space.decode({"model": 1, "kernel": 4, "pool": 0, "hidden": 2}) == {"model": "mlp", "hidden": 2}
    assert space.decode({"model": 0, "kernel": 4, "pool": 0, "hidden": 2}) == {"model": "cnn", "kernel": 4}
    expected = {"model": "cnn", "kernel": 5, "pool": "avg"}
    assert space.decode({"model": 0, "kernel": 5, "pool": 1, "hidden": 1}) == expected


def test_key_ignores_inactive_values_and_number_forms() -> None:
    space = SearchSpace(CONDITIONAL)
    assert space.key({"model": "mlp", "hidden": 2, "kernel": 4}) == space.key({"model": "mlp", "hidden": 2.0})
    assert space.key({"model": "mlp", "hidden": 2}) != space.key({"model": "mlp", "hidden": 1})
    mixed = SearchSpace(MIXED)
    base = {"lr": 0.001, "wd": 0.0, "depth": 3, "width": 64, "act": 1, "kernel": 7}
    # A float that came back from JSON as an int is the same configuration; a bool is not an int.
    assert mixed.key(base) == mixed.key({**base, "wd": 0, "depth": 3.0})
    assert mixed.key(base) != mixed.key({**base, "act": True})
    assert mixed.key(base) != mixed.key({**base, "act": 1.0})


def test_encode_refuses_values_outside_the_space() -> None:
    space = SearchSpace(MIXED)
    good = {"lr": 0.001, "wd": 0.0, "depth": 3, "width": 64, "act": "relu", "kernel": 7}
    with pytest.raises(ValueError, match="depth"):
        space.encode({**good, "depth": 9})
    with pytest.raises(ValueError, match="width"):
        space.encode({**good, "width": 65})
    with pytest.raises(ValueError, match="depth"):
        space.encode({**good, "depth": 2.5})
    with pytest.raises(ValueError, match="lr"):
        space.encode({k: v for k, v in good.items() if k != "lr"})


def test_encoded_inactive_parameters_get_valid_values() -> None:
    space = SearchSpace(CONDITIONAL)
    param = space.parametrization(seed=0)
    child = param.spawn_child(new_value=space.encode({"model": "mlp", "hidden": 1}))
    assert space.decode(child.value) == {"model": "mlp", "hidden": 1}


def test_cardinality_counts_active_configurations() -> None:
    assert SearchSpace(MIXED).cardinality is None
    space = SearchSpace(CONDITIONAL)
    # cnn: kernel 3 and 5 with pool (2 each) + kernel 4 alone = 5; mlp: hidden 1..2 = 2.
    assert space.cardinality == 7
    configs = list(space.configurations())
    assert len(configs) == 7
    assert len({space.key(c) for c in configs}) == 7
    assert SearchSpace([P("a", "int", min=0, max=9), P("b", "categorical", values=[1, "1"])]).cardinality == 20


def test_sample_draws_valid_configurations() -> None:
    space = SearchSpace([*CONDITIONAL, P("lr", "float", min=0.0001, max=1.0, scale="log")])
    rng = np.random.default_rng(0)
    for _ in range(100):
        config = space.sample(rng)
        assert space.normalise(config) == config
        assert 1e-4 <= config["lr"] <= 1.0


def test_malformed_spaces_are_refused() -> None:
    with pytest.raises(ValueError, match="cycle"):
        SearchSpace(
            [
                P("a", "categorical", values=[1, 2], when={"b": [1]}),
                P("b", "categorical", values=[1, 2], when={"a": [1]}),
            ]
        )
    with pytest.raises(ValueError, match="unknown"):
        SearchSpace([P("a", "categorical", values=[1, 2], when={"zz": [1]})])
