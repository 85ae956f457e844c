"""Per-member hyperparameters: declaration, parsing of user values, sampling.

An algorithm declares its traced hyperparameters as a flax ``struct.dataclass``
whose fields are created with :func:`hparam`. Each field carries its default,
the range of values that are valid at all (``valid``) and the range a search
may explore (``search``), so PBT and sweeps know where they may go without the
algorithm knowing about them.

A user gives a value per hyperparameter as a string (``--hp.lr-actor VALUE``):

* ``3e-4``                  -- every member gets this value;
* ``1e-4,3e-4,1e-3,3e-3``   -- one value per member (exactly N of them);
* ``uniform:LO,HI``         -- drawn per member from the run's seeded key (for an
  integer hyperparameter, uniformly over the whole numbers in the range);
* ``loguniform:LO,HI``      -- drawn log-uniformly;
* ``choice:A,B,...``        -- drawn uniformly from a finite set;
* ``search``                -- drawn from the algorithm's declared search range
  (log-uniformly where the hyperparameter is declared logarithmic), the range
  PBT/PB2 then explore (``populax algos ALGO`` lists each one's).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from populax.errors import ConfigError


class HParamInfo(NamedTuple):
    """What an algorithm declares about one traced hyperparameter."""

    default: float
    doc: str
    valid: tuple[float, float]
    """Closed interval of values the algorithm accepts at all."""
    search: tuple[float, float]
    """Interval ``--hp.NAME search`` draws from, and so PBT/PB2 explore (the valid range when not declared)."""
    log: bool
    """Whether the natural scale is logarithmic (learning rates)."""
    integer: bool
    """Whether values are rounded to integers (e.g. TD3's policy delay)."""


def hparam(
    default: float,
    doc: str,
    *,
    valid: tuple[float, float] = (-math.inf, math.inf),
    search: tuple[float, float] | None = None,
    log: bool = False,
    integer: bool = False,
) -> Any:
    """Declare a traced hyperparameter field of a ``struct.dataclass``."""
    info = HParamInfo(float(default), doc, valid, search or valid, log, integer)
    return struct.field(pytree_node=True, default=default, metadata={"hparam": info})


def cli_name(field_name: str) -> str:
    """``lr_actor`` -> ``lr-actor``: the spelling used on the command line."""
    return field_name.replace("_", "-")


def field_name(name: str) -> str:
    """``lr-actor`` -> ``lr_actor``: accepts either spelling."""
    return name.replace("-", "_")


def hparam_infos(hparams_type: type) -> dict[str, HParamInfo]:
    """The declared hyperparameters of an algorithm, by field name, in order."""
    return {
        f.name: f.metadata["hparam"]
        for f in dataclasses.fields(hparams_type)
        if "hparam" in f.metadata
    }


def check_declarations(hparams_type: type, where: str) -> None:
    """A one-line ConfigError naming ``where`` (the algorithm: ``py:module:NAME``) for a hyperparameter dataclass
    that declares what no run can use: a field not made with :func:`hparam` (no default, range or doc: it would
    reach the members unbatched), an empty range, a default or search range outside the valid range, a
    fractional default of an integer one. A user's ``--hp.NAME`` values are checked against these
    declarations later (:func:`check_spec`), so a wrong declaration must not read as the user's value."""
    if not (dataclasses.is_dataclass(hparams_type) and isinstance(hparams_type, type)):
        raise ConfigError(f"--algo: {where}'s hparams must be a flax struct.dataclass whose fields are made with "
                          f"populax.hparams.hparam (got {hparams_type!r})")
    plain = [f.name for f in dataclasses.fields(hparams_type) if "hparam" not in f.metadata]
    if plain:
        raise ConfigError(f"--algo: {where}'s hparams {hparams_type.__name__} {'has' if len(plain) == 1 else 'have'} "
                          f"undeclared field{'s' if len(plain) > 1 else ''} {', '.join(plain)}; declare each "
                          f"traced hyperparameter with populax.hparams.hparam(default, doc, valid=(LO, HI), "
                          f"search=(LO, HI))")
    try:
        structure = jax.tree.structure(hparams_type())
    except Exception:  # noqa: BLE001 - a field without a default fails here: the declarations say which
        structure = None
    if structure is None or structure.num_leaves != len(dataclasses.fields(hparams_type)):
        raise ConfigError(f"--algo: {where}'s hparams {hparams_type.__name__} must be a flax struct.dataclass (a "
                          f"pytree of one number per field), made with @flax.struct.dataclass")
    for name, info in hparam_infos(hparams_type).items():
        declares = f"--algo: {where} declares {name}'s"
        fix = f"; fix its hparam(...) in {hparams_type.__name__}"
        ranges = {"valid": info.valid, "search": info.search}
        for kind, bounds in ranges.items():
            if not (isinstance(bounds, (tuple, list)) and len(bounds) == 2
                    and all(isinstance(b, numbers.Real) and not isinstance(b, bool) for b in bounds)):
                raise ConfigError(f"{declares} {kind} range {bounds!r}: expected (LO, HI), two numbers{fix}")
            if not bounds[0] <= bounds[1]:  # NaN fails too
                raise ConfigError(f"{declares} {kind} range {range_text(bounds)} empty: LO must not exceed HI{fix}")
        if not math.isfinite(info.default) or not info.valid[0] <= info.default <= info.valid[1]:
            raise ConfigError(f"{declares} default {number_text(info.default)} outside its valid range "
                              f"{range_text(info.valid)}{fix}")
        if not info.valid[0] <= info.search[0] <= info.search[1] <= info.valid[1]:
            raise ConfigError(f"{declares} search range {range_text(info.search)} outside its valid range "
                              f"{range_text(info.valid)}{fix}")
        if info.integer and info.default != round(info.default):
            raise ConfigError(f"{declares} default {number_text(info.default)} fractional; it is declared "
                              f"integer{fix}")


def range_text(bounds: tuple[float, float]) -> str:
    """A declared range as it reads in an error: ``[0, 1]``, ``[0.9, 1.5]``, ``[-inf, inf]``."""
    return f"[{bounds[0]:g}, {bounds[1]:g}]"


class Distribution(NamedTuple):
    """A parsed per-member value: a fixed list or a distribution to draw from."""

    kind: str
    """One of ``const``, ``list``, ``uniform``, ``loguniform``, ``choice``."""
    values: tuple[float, ...]

    def bounds(self) -> tuple[float, float]:
        """Smallest and largest value this spec can produce."""
        return (min(self.values), max(self.values))


_SPEC_HELP = (
    "expected a number, N comma-separated numbers, uniform:LO,HI, "
    "loguniform:LO,HI, choice:A,B,... or search"
)

SEARCH = "search"
"""The value that means "the declared search range" (``--hp.lr-actor search``)."""


def parse_spec(name: str, text: str | float | int | list, pop: int | None) -> Distribution:
    """Parse a user's value for hyperparameter ``name`` (CLI or YAML form); a list must give one value per
    member of ``pop`` (None: any count, for settings already checked against the run's --pop)."""
    setting = f"--hp.{cli_name(name)}"
    if isinstance(text, bool):
        raise ConfigError(f"{setting}: got {text!r}; {_SPEC_HELP}")
    if isinstance(text, (int, float)):
        return Distribution("const", (float(text),))
    if isinstance(text, (list, tuple)):
        text = ",".join(str(v) for v in text)
    text = str(text).strip()
    kind, _, rest = text.partition(":")
    if not rest:
        kind, rest = "list", text
    try:
        values = tuple(float(v) for v in rest.split(","))
    except ValueError:
        raise ConfigError(f"{setting}: cannot parse {text!r}; {_SPEC_HELP}") from None
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{setting}: {text!r} is not finite; {_SPEC_HELP}")
    if kind == "list":
        if len(values) == 1:
            return Distribution("const", values)
        if pop is not None and len(values) != pop:
            raise ConfigError(
                f"{setting}: gives {len(values)} values but --pop is {pop}; "
                "give one value or exactly one per member"
            )
        return Distribution("list", values)
    if kind in ("uniform", "loguniform"):
        if len(values) != 2 or values[0] > values[1]:
            raise ConfigError(f"{setting}: {kind} needs LO,HI with LO <= HI, got {rest!r}")
        if kind == "loguniform" and values[0] <= 0:
            raise ConfigError(f"{setting}: loguniform needs 0 < LO <= HI, got {rest!r}")
        return Distribution(kind, values)
    if kind == "choice":
        return Distribution(kind, values)
    raise ConfigError(f"{setting}: unknown distribution {kind!r}; {_SPEC_HELP}")


def declared_search(name: str, info: HParamInfo) -> Distribution:
    """The prior ``--hp.NAME search`` stands for: the declared search range, drawn log-uniformly where the
    hyperparameter is declared logarithmic (and the range positive), uniformly otherwise."""
    lo, hi = info.search
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ConfigError(
            f"--hp.{cli_name(name)}: search: the algorithm declares no finite search range for it (valid: "
            f"[{info.valid[0]:g}, {info.valid[1]:g}]); give uniform:LO,HI or loguniform:LO,HI"
        )
    if lo == hi:
        return Distribution("const", (lo,))
    return Distribution("loguniform" if info.log and lo > 0 else "uniform", (lo, hi))


def draw_whole_numbers(key: jax.Array, lo: float, hi: float, count: int) -> np.ndarray:
    """``count`` whole numbers in [lo, hi], each equally likely (rounding a real draw would give the two ends half
    the weight); computed in float64, so a range beyond int32 (a step count of 1e10) draws as any other."""
    first, last = math.ceil(lo), math.floor(hi)
    span = last - first + 1
    unit = np.asarray(jax.random.uniform(key, (count,)), np.float64)
    return first + np.minimum(np.floor(unit * span), span - 1)


def draw(dist: Distribution, key: jax.Array, pop: int, integer: bool = False) -> np.ndarray:
    """Draw ``pop`` values from ``dist`` with ``key`` (deterministic per key); ``integer``: a ``uniform`` draw is
    uniform over the whole numbers in its range (:func:`draw_whole_numbers`)."""
    lo, hi = dist.bounds()
    if dist.kind == "uniform" and integer:
        return draw_whole_numbers(key, lo, hi, pop)
    if dist.kind == "const":
        return np.full((pop,), dist.values[0], np.float32)
    if dist.kind == "list":
        return np.asarray(dist.values, np.float32)
    if dist.kind == "uniform":
        return np.asarray(jax.random.uniform(key, (pop,), minval=lo, maxval=hi))
    if dist.kind == "loguniform":
        u = jax.random.uniform(key, (pop,), minval=math.log(lo), maxval=math.log(hi))
        return np.asarray(jnp.exp(u))
    index = jax.random.randint(key, (pop,), 0, len(dist.values))
    return np.asarray(dist.values, np.float32)[np.asarray(index)]


def validate(name: str, info: HParamInfo, values: np.ndarray) -> None:
    """Raise a one-line ConfigError if any member's value is outside ``info.valid``."""
    lo, hi = info.valid
    bad = values[(values < lo) | (values > hi)]
    if bad.size:
        raise ConfigError(
            f"--hp.{cli_name(name)}: {number_text(float(bad[0]))} is outside the allowed range "
            f"[{lo:g}, {hi:g}]"
        )
    fractional = values[values != np.round(values)] if info.integer else values[:0]
    if fractional.size:
        raise ConfigError(f"--hp.{cli_name(name)}: must be a whole number (got {number_text(float(fractional[0]))})")


def check_spec(name: str, info: HParamInfo, spec: Distribution) -> None:
    """A one-line ConfigError for a user's spec that could give a member an invalid value, whatever the seed: a
    given value (a constant, a list's, a choice's) outside ``info.valid`` or not whole where ``info.integer``; a
    range reaching outside ``info.valid``, or holding no whole number where ``info.integer``."""
    if spec.kind in ("uniform", "loguniform"):
        validate(name, info._replace(integer=False), np.asarray(spec.bounds(), np.float64))
        if info.integer and math.ceil(spec.bounds()[0]) > spec.bounds()[1]:
            raise ConfigError(f"--hp.{cli_name(name)}: {spec_to_text(spec)} holds no whole number")
    else:
        validate(name, info, np.asarray(spec.values, np.float64))


def resolve_specs(
    hparams_type: type, user: dict[str, Any], pop: int | None, option_names: tuple[str, ...] = ()
) -> dict[str, Distribution]:
    """Turn the user's hyperparameter settings into one Distribution per field.

    Unknown names raise a ConfigError listing the algorithm's names; fields the
    user did not set take their declared default (``option_names``: the algorithm's static options, which a
    mistaken ``--hp.NAME`` is pointed to); ``search`` becomes the declared
    search range (:func:`declared_search`). A value that is not allowed is refused
    here, before any draw (:func:`check_spec`).
    """
    infos = hparam_infos(hparams_type)
    specs = {name: Distribution("const", (info.default,)) for name, info in infos.items()}
    for raw_name, text in user.items():
        name = field_name(raw_name)
        if name not in infos and name in option_names:
            raise ConfigError(f"--hp.{cli_name(name)}: an algorithm option (static: one value for the whole "
                              f"population), not a hyperparameter; give --algo-opt.{cli_name(name)} VALUE")
        if name not in infos:
            known = ", ".join(cli_name(n) for n in infos)
            raise ConfigError(f"--hp.{cli_name(name)}: unknown hyperparameter; allowed: {known}")
        is_search = isinstance(text, str) and text.strip() == SEARCH
        specs[name] = declared_search(name, infos[name]) if is_search else parse_spec(name, text, pop)
        check_spec(name, infos[name], specs[name])
    return specs


def zero_hparams(hparams_type: type, user: dict[str, Any]) -> frozenset[str]:
    """Names of the hyperparameters fixed at 0 for every member of the run (a constant 0 spec).

    A strategy explores only non-constant specs and resume keeps the config, so
    such a value stays 0: an agent may leave out the computation it scales.
    No member count: a backend over part of the run (a Ray worker's block, a
    cohort of a mixed-shape population) asks with the run's per-member lists,
    whose length the run checked against its --pop.
    """
    specs = resolve_specs(hparams_type, user, None)
    return frozenset(name for name, spec in specs.items() if spec.kind == "const" and spec.values == (0.0,))


def sample_population(
    hparams_type: type, specs: dict[str, Distribution], key: jax.Array, pop: int
) -> Any:
    """Stacked hyperparameters ``[pop]`` per field, each drawn with its own key."""
    infos = hparam_infos(hparams_type)
    keys = jax.random.split(key, len(infos))
    columns = {}
    for k, (name, info) in zip(keys, infos.items(), strict=True):
        spec = specs[name]
        values = draw(spec, k, pop, info.integer)
        if info.integer and spec.kind == "loguniform":  # a draw from a range lands between whole numbers
            values = np.clip(np.round(values), math.ceil(spec.bounds()[0]), math.floor(spec.bounds()[1]))
        validate(name, info, values)
        columns[name] = jnp.asarray(values, jnp.float32)
    return hparams_type(**columns)


def number_text(value: float) -> str:
    """``value`` as short as it reads back exactly: ``3e-05``, ``0.9``, ``1234567`` (not ``1.23457e+06``)."""
    short = f"{value:g}"
    if float(short) == value:
        return short
    return str(int(value)) if value == int(value) else repr(float(value))


def spec_to_text(dist: Distribution) -> str | float:
    """The inverse of :func:`parse_spec`, used to write a resolved config."""
    if dist.kind == "const":
        return dist.values[0]
    joined = ",".join(number_text(v) for v in dist.values)
    return joined if dist.kind == "list" else f"{dist.kind}:{joined}"


def member_hparams(hparams: Any, member: int) -> dict[str, float]:
    """One member's hyperparameters as plain floats, keyed by CLI name."""
    return {
        cli_name(name): float(f"{float(np.asarray(getattr(hparams, name))[member]):.7g}")
        for name in hparam_infos(type(hparams))
    }
