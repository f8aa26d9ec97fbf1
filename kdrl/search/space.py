"""The search space, written as Hydra sweep overrides (``hydra.sweeper.params`` and the command
line), as Optuna distributions:

* ``choice(a, b, c)`` or ``a,b,c``: categorical;
* ``interval(lo, hi)``: uniform float (Hydra parses an interval's ends as floats; ints: ``range``);
  ``tag(log, interval(lo, hi))``: log-uniform;
* ``range(start, stop[, step])``: the ints (or floats) of Python's range, ``stop`` excluded.

Every other override is fixed: passed to each trial as written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SearchSpace:
    distributions: dict[str, Any] = field(default_factory=dict)  # key -> optuna distribution
    fixed: list[str] = field(default_factory=list)  # overrides every trial gets, as written

    def trial_overrides(self, params: dict[str, Any]) -> list[str]:
        """One trial's overrides: the fixed ones, then its sampled values."""
        return [*self.fixed, *(f"{k}={format_value(v)}" for k, v in params.items())]


def format_value(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)


def distribution_of(override: Any) -> Any:
    """The Optuna distribution of one parsed sweep override."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep, Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    key = override.get_key_element()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        bad = [c for c in choices if not isinstance(c, str | int | float | bool | type(None))]
        if bad:
            raise ValueError(f"{key}: choices must be str, int, float, bool or null, got {bad[0]!r}")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if any(isinstance(x, float) for x in (start, stop, step)):
            n = int((float(stop) - float(start)) / float(step) - 1e-9)
            return FloatDistribution(float(start), float(start) + n * float(step), step=float(step))
        n = (int(stop) - int(start) - 1) // int(step)
        if n < 0:
            raise ValueError(f"{key}: empty range({start}, {stop}, {step})")
        return IntDistribution(int(start), int(start) + n * int(step), step=int(step))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(int(value.start), int(value.end), log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ValueError(f"{override.input_line}: not a search dimension (choice, range or interval)")


def parse_space(overrides: list[str]) -> SearchSpace:
    """``overrides`` (``key=value`` strings, the sweeper's params first, then the command line's) as a
    search space; a key given twice keeps its last value, as Hydra does."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    space = SearchSpace()
    fixed: dict[str, str] = {}
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.get_key_element()
        if o.is_sweep_override():
            fixed.pop(key, None)
            space.distributions[key] = distribution_of(o)
        else:
            space.distributions.pop(key, None)
            fixed[key] = o.input_line
    space.fixed = list(fixed.values())
    return space
