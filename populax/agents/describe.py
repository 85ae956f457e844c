"""What an algorithm declares, as rows a person reads (``populax algos``): its traced hyperparameters
(``--hp.NAME``: default, valid and search ranges, meaning), its static options (``--algo-opt.NAME``) and
what kind of learner it is. Everything comes from the declarations themselves, so a user's algorithm
describes itself the same way."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

from populax.agents import Algorithm
from populax.docstrings import field_docs
from populax.hparams import cli_name, hparam_infos


class HParamRow(NamedTuple):
    """One traced hyperparameter as ``populax algos ALGO`` lists it."""

    name: str
    """CLI spelling (``--hp.NAME``)."""
    default: str
    valid: str
    """Values the algorithm accepts at all."""
    search: str
    """Where sweeps' and PBT's resampling look by default, with its scale."""
    meaning: str


class OptionRow(NamedTuple):
    """One static option as ``populax algos ALGO`` lists it."""

    name: str
    """CLI spelling (``--algo-opt.NAME``)."""
    default: str
    kind: str
    """bool, int, float or str."""
    meaning: str


def number_text(value: float) -> str:
    """A bound or default as people write it (``%g``: 0.0003, 1e-05, 1e+06; inf)."""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:g}"


def interval_text(bounds: tuple[float, float]) -> str:
    """A closed interval; an unbounded side as >= / <=, none at all as any."""
    low, high = bounds
    if math.isinf(low) and math.isinf(high):
        return "any"
    if math.isinf(high):
        return f">= {number_text(low)}"
    if math.isinf(low):
        return f"<= {number_text(high)}"
    return f"[{number_text(low)}, {number_text(high)}]"


def hparam_rows(algorithm: Algorithm) -> list[HParamRow]:
    """The algorithm's traced hyperparameters, in declaration order."""
    rows = []
    for name, info in hparam_infos(algorithm.hparams).items():
        scale = "log" if info.log else "linear"
        search = f"{interval_text(info.search)} {scale}" + (", integers" if info.integer else "")
        default = str(int(info.default)) if info.integer else number_text(info.default)
        rows.append(HParamRow(cli_name(name), default, interval_text(info.valid), search, info.doc))
    return rows


def option_rows(algorithm: Algorithm) -> list[OptionRow]:
    """The algorithm's static options (none when it declares no options dataclass), in declaration order."""
    if algorithm.options is None:
        return []
    docs = field_docs(algorithm.options)
    defaults = algorithm.options()
    return [OptionRow(cli_name(f.name), str(getattr(defaults, f.name)), type_name(f.type), docs.get(f.name, ""))
            for f in dataclasses.fields(algorithm.options)]


def type_name(annotation: object) -> str:
    """``float`` whether the module postponed its annotations (a string) or not (the type)."""
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))


def learner_kind(algorithm: Algorithm) -> str:
    """off-policy, on-policy, or a coupled population method (members share state inside the update)."""
    if algorithm.coupled:
        return "coupled population method"
    return "on-policy" if algorithm.on_policy else "off-policy"


def action_kinds(algorithm: Algorithm) -> str:
    """Which action spaces it trains on."""
    return ", ".join(kind for kind, ok in (("continuous", algorithm.continuous), ("discrete", algorithm.discrete)) if ok)


def copied_by_policy_exploit(algorithm: Algorithm) -> str:
    """What ``--pbt-copy policy`` copies for it."""
    return ", ".join(algorithm.policy_fields) if algorithm.policy_fields else "the whole network (one network)"
