"""Search algorithms by name: every Nevergrad optimizer, plus kubenas's own compositions.

``build_optimizer`` is the one place the Suggester gets an optimizer from.
"""

from __future__ import annotations

import nevergrad as ng


def build_optimizer(
    name: str, parametrization: ng.p.Parameter, budget: int | None, num_workers: int
) -> ng.optimizers.base.Optimizer:
    """An optimizer called ``name`` over ``parametrization``.

    Raises:
        KeyError: no algorithm has that name.
    """
    factory = ng.optimizers.registry[name]
    return factory(parametrization=parametrization, budget=budget, num_workers=num_workers)


def known_names() -> list[str]:
    """Every algorithm name ``build_optimizer`` accepts."""
    return sorted(ng.optimizers.registry)
