"""What the Suggester attaches to a told candidate, beyond the loss.

Attributes set on the told candidate, so the Nevergrad ``tell(candidate, loss)`` signature stays:

- a constrained objective's unpenalised losses and constraint margins (``ConstrainedResult``),
  read by feasibility-aware optimizers (``SurrogateLocalSearch``);
- the trial's index (its creation order), read by optimizers whose state depends on the order
  results arrive in (``RegularizedEvolution``'s ages, ``PolicyGradient``'s updates): a rebuild
  replays results best first, not in trial order, and the index puts them back in order.

Other optimizers ignore both.
"""

from __future__ import annotations

from dataclasses import dataclass

import nevergrad as ng

_CONSTRAINED = "kubenas_constrained"
_ORDER = "kubenas_trial_index"


@dataclass(frozen=True)
class ConstrainedResult:
    """A succeeded trial's result under a constrained objective.

    ``losses`` are the objective's losses without any penalty; ``margins`` are the constraints'
    signed margins in units of their bounds (> 0 violated, <= 0 met; ``inf`` when unknown).
    """

    losses: tuple[float, ...]
    margins: tuple[float, ...]


def attach_constrained(candidate: ng.p.Parameter, result: ConstrainedResult) -> None:
    """Hand ``result`` to a feasibility-aware optimizer with the next ``tell(candidate, ...)``.

    Other optimizers ignore it and learn from the (penalised) loss told.
    """
    setattr(candidate, _CONSTRAINED, result)


def constrained_of(candidate: ng.p.Parameter) -> ConstrainedResult | None:
    result = getattr(candidate, _CONSTRAINED, None)
    return result if isinstance(result, ConstrainedResult) else None


def attach_trial_index(candidate: ng.p.Parameter, index: int) -> None:
    """Tell order-aware optimizers which trial (by creation order) the next ``tell(candidate, ...)`` is."""
    setattr(candidate, _ORDER, int(index))


def trial_index_of(candidate: ng.p.Parameter) -> int | None:
    index = getattr(candidate, _ORDER, None)
    return index if isinstance(index, int) else None
