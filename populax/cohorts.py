"""Static settings per member: the cohorts of a mixed-shape population (issue 25).

A traced hyperparameter (a learning rate) is data inside one compiled program; a *static* setting (the
network's widths, the batch size) changes array shapes, so members that differ in one cannot share a
program. ``--hp.hidden choice:64x64,256x256`` (or one value per member, ``--hp.batch-size 64,64,256,256``)
makes such a setting per member; the members sharing every static setting form a **cohort**, which runs as
one compiled program (``populax.backends.cohorts``). The run's cohorts are every combination of the given
values (``StaticSpace.settings``), so a member can move to a combination no member started in.

Read top to bottom::

    specs      = split_static(config.hp)            # --hp.NAME for a static setting; the rest stay traced
    space      = StaticSpace(specs)                 # cohort i <-> one combination of the values
    cohort_of  = space.assign(key, pop)             # int [N]: each member's cohort (seeded draw)
    config_i   = space.config_for(config, i)        # the run's config with cohort i's static settings

Which settings may differ between members (``MIXABLE``), and why the others may not, is declared here once.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, NamedTuple

import jax
import numpy as np

from populax.errors import ConfigError

MIXABLE = ("hidden", "batch_size", "n_step", "envs_per_member")
"""Static settings that may differ between members of one run (``--hp.NAME``), in this order in labels."""

NOT_MIXABLE = {
    "algo": "members of different algorithms have different hyperparameters and states to rank and copy; "
            "run one population per algorithm",
    "env": "members are ranked on one task",
    "buffer_size": "a moved member keeps its replay buffer, whose capacity is its layout",
    "learning_starts": "it sets when the whole population starts learning",
    "updates_per_step": "it sets the loop's phase, which every cohort shares",
}
"""Static settings that must be one value for the whole run, each with the reason (the refusal says it)."""

CROSS_COHORT = ("copy", "distill", "fresh")
"""``--pbt-cross-cohort``: how a member that copies one of another cohort is re-created in the new shape."""

STATIC_KEY = 5
"""fold_in constant of the run's key for the static settings' draw (1: hparams, 2: init, 3: eval, 4: strategy)."""


class StaticSpec(NamedTuple):
    """A parsed ``--hp.NAME`` of a static setting."""

    kind: str
    """``const`` (one value for all), ``list`` (one per member) or ``choice`` (drawn per member)."""
    values: tuple[Any, ...]
    """The values: widths tuples for ``hidden``, whole numbers otherwise."""


def setting_flag(name: str) -> str:
    """``--hp.NAME`` of a static setting as a user writes it."""
    return f"--hp.{name.replace('_', '-')}"


def parse_value(name: str, text: str) -> Any:
    """One value of static setting ``name``: ``64x64`` (widths) for hidden, a positive whole number otherwise."""
    try:
        if name == "hidden":
            widths = tuple(int(w) for w in text.strip().split("x"))
            if not widths or min(widths) < 1:
                raise ValueError
            return widths
        value = float(text)
        if value != int(value) or value < 1:
            raise ValueError
        return int(value)
    except ValueError:
        kind = "widths like 64x64" if name == "hidden" else "a positive whole number"
        raise ConfigError(f"{setting_flag(name)}: cannot read {text.strip()!r} as {kind}") from None


def value_text(name: str, value: Any) -> str:
    """The inverse of :func:`parse_value`."""
    return "x".join(str(w) for w in value) if name == "hidden" else str(value)


def parse_static(name: str, text: Any, pop: int) -> StaticSpec:
    """A user's ``--hp.NAME`` for static setting ``name``: one value, one per member, or ``choice:A,B,...``."""
    # [[32], [32]] says "one layer per member" unmistakably; "32,32" and [32, 32] may be --hidden's habit
    layered = isinstance(text, (list, tuple)) and all(isinstance(v, (list, tuple)) for v in text)
    if isinstance(text, (list, tuple)):
        text = ",".join(value_text(name, v) if isinstance(v, (list, tuple)) else str(v) for v in text)
    if str(text).strip() == "search":  # a shape declares no search range: its candidates are the user's to name
        raise ConfigError(f"{setting_flag(name)}: a static setting has no declared search range; give "
                          "choice:A,B,... or one value per member")
    kind, _, rest = str(text).strip().partition(":")
    if not rest:
        kind, rest = "list", str(text)
    if kind not in ("list", "choice"):
        raise ConfigError(f"{setting_flag(name)}: a static setting takes one value, one per member, or "
                          f"choice:A,B,... (got {text!r})")
    values = tuple(parse_value(name, part) for part in rest.split(",") if part.strip())
    if not values:
        raise ConfigError(f"{setting_flag(name)}: no value given")
    if kind == "choice":
        return StaticSpec("choice", tuple(dict.fromkeys(values)))
    if len(values) == 1:
        return StaticSpec("const", values)
    if name == "hidden" and not layered and len(set(values)) == 1 and len(values[0]) == 1:
        # `--hp.hidden 32,32` is --hidden's "two layers of 32" habit: as a list it is one 32-layer per member
        width = values[0][0]
        raise ConfigError(f"{setting_flag(name)}: {rest.strip()} would give every member one layer of {width}; for "
                          f"{len(values)} layers write {'x'.join([str(width)] * len(values))} (or --hidden "
                          f"{rest.strip()}), for one layer {width}")
    if len(values) != pop:
        raise ConfigError(f"{setting_flag(name)}: gives {len(values)} values but --pop is {pop}; give one value, "
                          "exactly one per member, or choice:A,B,...")
    return StaticSpec("list", values)


def spec_text(name: str, spec: StaticSpec) -> str:
    """The inverse of :func:`parse_static` (config.yaml's ``hp`` entry)."""
    joined = ",".join(value_text(name, v) for v in spec.values)
    return f"choice:{joined}" if spec.kind == "choice" else joined


def split_static(hp: dict[str, Any], pop: int, config_fields: Any) -> tuple[dict[str, StaticSpec], dict[str, Any]]:
    """``--hp`` entries of static settings (parsed) and the rest (traced hyperparameters, as given).

    ``config_fields``: the run configuration's field names; a ``--hp.NAME`` naming one that may not differ
    between members is refused in one line with the reason."""
    static, traced = {}, {}
    for raw, text in hp.items():
        name = raw.replace("-", "_")
        if name in MIXABLE:
            static[name] = parse_static(name, text, pop)
        elif name in config_fields:
            reason = NOT_MIXABLE.get(name, "it is a setting of the run, not of a member")
            allowed = ", ".join(n.replace("_", "-") for n in MIXABLE)
            raise ConfigError(f"{setting_flag(name)}: cannot differ between members ({reason}); static settings "
                              f"that may: {allowed}")
        else:
            traced[raw] = text
    return {name: static[name] for name in MIXABLE if name in static}, traced


class StaticSpace:
    """The static settings that differ between members and their cohorts (every combination of the values)."""

    def __init__(self, specs: dict[str, StaticSpec]):
        """``specs``: the varying settings only (``const`` ones are the run's own settings)."""
        self.specs = specs
        self.names = tuple(specs)
        self.values = {name: tuple(dict.fromkeys(spec.values)) for name, spec in specs.items()}
        """Each setting's distinct values, in the order given (explore moves between neighbours)."""
        self.settings: list[dict[str, Any]] = [
            dict(zip(self.names, combo)) for combo in itertools.product(*self.values.values())
        ]
        """Cohort index -> its static settings."""
        self.labels = tuple(self.label(s) for s in self.settings)
        """Cohort index -> its name, e.g. ``hidden=64x64 batch-size=256``."""

    def label(self, settings: dict[str, Any]) -> str:
        """A cohort's name from its settings."""
        return " ".join(f"{n.replace('_', '-')}={value_text(n, settings[n])}" for n in self.names)

    def index(self, settings: dict[str, Any]) -> int:
        """The cohort of ``settings``."""
        return self.settings.index({n: settings[n] for n in self.names})

    def texts(self, cohort: int) -> dict[str, str]:
        """Cohort ``cohort``'s settings as text, keyed by CLI name (lineage events, reports)."""
        return {n.replace("_", "-"): value_text(n, v) for n, v in self.settings[cohort].items()}

    def config_for(self, config: Any, cohort: int) -> Any:
        """The run's configuration with cohort ``cohort``'s static settings."""
        return dataclasses.replace(config, **self.settings[cohort])

    def assign(self, key: jax.Array, pop: int) -> np.ndarray:
        """int [pop]: each member's initial cohort (lists as given, choices drawn uniformly with ``key``)."""
        columns = []
        for j, spec in enumerate(self.specs.values()):
            if spec.kind == "list":
                columns.append(list(spec.values))
            else:
                picks = np.asarray(jax.random.randint(jax.random.fold_in(key, j), (pop,), 0, len(spec.values)))
                columns.append([spec.values[p] for p in picks])
        return np.asarray([self.index(dict(zip(self.names, row))) for row in zip(*columns)], np.int64)

    def explore(self, cohort: int, key: jax.Array, probability: float) -> int:
        """PBT's explore of the static settings: each one moves to a neighbouring value (in the order given) with
        ``probability``, else stays: the cohort the result belongs to."""
        settings = dict(self.settings[cohort])
        for j, (name, values) in enumerate(self.values.items()):
            coin, side = jax.random.split(jax.random.fold_in(key, j))
            if len(values) > 1 and float(jax.random.uniform(coin)) < probability:
                position = values.index(settings[name])
                step = 1 if bool(jax.random.bernoulli(side)) else -1
                if not 0 <= position + step < len(values):
                    step = -step  # at an end: the one neighbour
                settings[name] = values[position + step]
        return self.index(settings)


def static_space(specs: dict[str, StaticSpec]) -> StaticSpace | None:
    """The space of the settings that really vary (None: every member has the same static settings)."""
    varying = {name: spec for name, spec in specs.items() if len(set(spec.values)) > 1}
    return StaticSpace(varying) if varying else None


def constant_settings(specs: dict[str, StaticSpec]) -> dict[str, Any]:
    """Static settings given once for every member (``--hp.hidden 64x64``): plain settings of the run."""
    return {name: spec.values[0] for name, spec in specs.items() if len(set(spec.values)) == 1}


def initial_assignment(space: StaticSpace, seed: int, pop: int) -> np.ndarray:
    """The run's members' initial cohorts, from its seed."""
    return space.assign(jax.random.fold_in(jax.random.key(seed), STATIC_KEY), pop)
