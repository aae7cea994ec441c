"""Search algorithms by name: every Nevergrad optimizer, plus kubenas's own.

``build_optimizer`` is the one place the Suggester gets an optimizer from. kubenas's own
algorithms are Nevergrad optimizers (ask/tell over a parametrization of choices and bounded
scalars, as ``kubenas.space`` builds them), one module each:

- ``SurrogateLocalSearch`` (``surrogate``), the default: a Thompson-sampled Bayesian model of
  the results guides a local search.
- ``RegularizedEvolution`` (``evolution``): Real et al. 2019, tournament selection and aging.
- ``PolicyGradient`` (``policy``): a REINFORCE controller with a moving-average baseline.
"""

from __future__ import annotations

from collections.abc import Callable

import nevergrad as ng
from nevergrad.optimization import base

from kubenas.algorithms.attachments import ConstrainedResult, attach_constrained, attach_trial_index
from kubenas.algorithms.evolution import EvolutionSettings, RegularizedEvolution
from kubenas.algorithms.policy import PolicyGradient, PolicySettings
from kubenas.algorithms.surrogate import Settings, SurrogateLocalSearch

__all__ = [
    "DEFAULT",
    "OWN",
    "ConstrainedResult",
    "EvolutionSettings",
    "PolicyGradient",
    "PolicySettings",
    "RegularizedEvolution",
    "Settings",
    "SurrogateLocalSearch",
    "attach_constrained",
    "attach_trial_index",
    "build_optimizer",
    "known_names",
]

DEFAULT = "SurrogateLocalSearch"

OWN: dict[str, Callable[..., base.Optimizer]] = {
    "SurrogateLocalSearch": SurrogateLocalSearch(),
    "RegularizedEvolution": RegularizedEvolution(),
    "PolicyGradient": PolicyGradient(),
}


def build_optimizer(
    name: str, parametrization: ng.p.Parameter, budget: int | None, num_workers: int
) -> ng.optimizers.base.Optimizer:
    """An optimizer called ``name`` over ``parametrization``.

    Raises:
        KeyError: no algorithm has that name.
    """
    factory = OWN.get(name) or ng.optimizers.registry[name]
    return factory(parametrization=parametrization, budget=budget, num_workers=num_workers)


def known_names() -> list[str]:
    """Every algorithm name ``build_optimizer`` accepts."""
    return sorted({*ng.optimizers.registry, *OWN})
