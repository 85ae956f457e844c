"""Parsing and sampling of per-member hyperparameters."""

import jax
import numpy as np
import pytest
from flax import struct

from populax.agents.td3 import TD3HParams
from populax.errors import ConfigError
from populax.hparams import (
    Distribution,
    hparam,
    hparam_infos,
    parse_spec,
    resolve_specs,
    sample_population,
    spec_to_text,
)
from populax.strategies.space import make_space, resample


@pytest.mark.parametrize(
    "text, kind, values",
    [
        ("3e-4", "const", (3e-4,)),
        (0.5, "const", (0.5,)),
        ("1,2,3,4", "list", (1, 2, 3, 4)),
        ("uniform:0.9,1.0", "uniform", (0.9, 1.0)),
        ("loguniform:1e-5,1e-2", "loguniform", (1e-5, 1e-2)),
        ("choice:1,2,5", "choice", (1, 2, 5)),
    ],
)
def test_parse_spec_forms(text, kind, values):
    dist = parse_spec("lr_actor", text, pop=4)
    assert dist.kind == kind
    np.testing.assert_allclose(dist.values, values)
    assert parse_spec("lr_actor", spec_to_text(dist), pop=4).kind == kind


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("loguniform:1e-3", "LO,HI"),
        ("loguniform:0,1", "0 < LO"),
        ("uniform:2,1", "LO <= HI"),
        ("gauss:1,2", "unknown distribution"),
        ("1,2,3", "--pop is 4"),
        ("abc", "cannot parse"),
        ("nan", "not finite"),
    ],
)
def test_parse_spec_errors_name_the_setting(text, fragment):
    with pytest.raises(ConfigError) as error:
        parse_spec("lr_actor", text, pop=4)
    assert "--hp.lr-actor" in str(error.value) and fragment in str(error.value)


def test_sampling_is_seeded_and_within_range():
    specs = resolve_specs(TD3HParams, {"lr-actor": "loguniform:1e-5,1e-2", "delay": "choice:1,3"}, pop=64)
    a = sample_population(TD3HParams, specs, jax.random.key(0), 64)
    b = sample_population(TD3HParams, specs, jax.random.key(0), 64)
    c = sample_population(TD3HParams, specs, jax.random.key(1), 64)
    np.testing.assert_array_equal(a.lr_actor, b.lr_actor)
    assert not np.array_equal(a.lr_actor, c.lr_actor)
    assert 1e-5 <= float(a.lr_actor.min()) and float(a.lr_actor.max()) <= 1e-2
    # log-uniform: about half the draws fall below the geometric mean
    assert 16 < int((np.asarray(a.lr_actor) < np.sqrt(1e-5 * 1e-2)).sum()) < 48
    assert set(np.asarray(a.delay).tolist()) == {1.0, 3.0}
    np.testing.assert_allclose(a.gamma, 0.99)


def test_unknown_and_out_of_range_values():
    with pytest.raises(ConfigError, match="unknown hyperparameter; allowed: lr-actor"):
        resolve_specs(TD3HParams, {"learning-rate": 1}, pop=2)
    with pytest.raises(ConfigError, match=r"--hp.lr-critic: -0.1 is outside the allowed range"):
        resolve_specs(TD3HParams, {"lr-critic": "-0.1"}, pop=2)
    specs = {**resolve_specs(TD3HParams, {}, pop=2), "delay": Distribution("const", (0.0,))}
    with pytest.raises(ConfigError, match="--hp.delay"):
        sample_population(TD3HParams, specs, jax.random.key(0), 2)


def test_search_draws_from_the_declared_search_range_and_pbt_explores_it():
    """``--hp.NAME search``: the declared range, log-uniform where declared logarithmic, integers rounded."""
    specs = resolve_specs(TD3HParams, {"lr-actor": "search", "delay": " search", "sigma": "search"}, pop=256)
    infos = hparam_infos(TD3HParams)
    assert specs["lr_actor"] == Distribution("loguniform", infos["lr_actor"].search) == Distribution(
        "loguniform", (3e-5, 3e-3))
    assert specs["delay"] == Distribution("uniform", (1, 5)) and specs["sigma"] == Distribution("uniform", (0.0, 1.0))
    assert specs["gamma"] == Distribution("const", (0.99,))  # not asked for: the default
    drawn = sample_population(TD3HParams, specs, jax.random.key(0), 256)
    lr = np.asarray(drawn.lr_actor)
    assert 3e-5 <= lr.min() and lr.max() <= 3e-3
    assert 80 < int((lr < np.sqrt(3e-5 * 3e-3)).sum()) < 176  # log-uniform: half below the geometric mean
    # every whole number of the range equally likely (rounding a real draw gave 1 and 5 half the weight of 2-4)
    counts = np.bincount(np.asarray(drawn.delay, int), minlength=6)[1:]
    assert counts.sum() == 256 and counts.min() > 30, counts
    # PBT/PB2 explore exactly the declared range (the strategies' space is built from the specs).
    space = {dim.name: dim for dim in make_space(TD3HParams, specs)}
    assert list(space) == ["lr_actor", "sigma", "delay"]
    assert (space["lr_actor"].lo, space["lr_actor"].hi, space["lr_actor"].log) == (3e-5, 3e-3, True)
    assert (space["delay"].lo, space["delay"].hi, space["delay"].integer) == (1, 5, True)
    counts = np.bincount(resample(space["delay"], jax.random.key(1), 1000).astype(int), minlength=6)[1:]
    assert counts.sum() == 1000 and counts.min() > 150, counts  # PBT's resample: uniform over 1..5 too
    with pytest.raises(ConfigError, match=r"^--hp.delay: uniform:1.2,1.8 holds no whole number$"):
        sample_population(TD3HParams, resolve_specs(TD3HParams, {"delay": "uniform:1.2,1.8"}, 2), jax.random.key(0), 2)
    # The resolved config writes the range out, so a rerun or resume does not depend on the declaration.
    assert spec_to_text(specs["lr_actor"]) == "loguniform:3e-05,0.003"


@struct.dataclass
class UnboundedHParams:
    """An algorithm's hyperparameters, one declared without a search range."""

    scale: float = hparam(1.0, "A multiplier with no natural range.")
    rate: float = hparam(0.1, "A rate with its valid range only.", valid=(0, 1))


def test_search_without_a_declared_finite_range_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"^--hp.scale: search: the algorithm declares no finite search range .*"
                                          r"give uniform:LO,HI or loguniform:LO,HI$"):
        resolve_specs(UnboundedHParams, {"scale": "search"}, pop=2)
    # Without a search range the valid range is the declared one (hparam's default), when finite.
    assert resolve_specs(UnboundedHParams, {"rate": "search"}, pop=2)["rate"] == Distribution("uniform", (0, 1))


def test_a_resolved_config_reads_back_every_value_exactly_and_given_integers_are_not_rounded():
    """The resolved config.yaml reruns a run: a list of many-digit values must read back to the same values
    (``%g`` would write 1234567 as 1.23457e+06); a fractional value of an integer hyperparameter is an error,
    not silently rounded (a draw from a range is rounded)."""
    given = {"eps-decay-steps": "1234567,2000000", "lr": "0.000123456789,3e-4", "gamma": "uniform:0.91234567,1"}
    from populax.agents.dqn import DQNHParams

    specs = resolve_specs(DQNHParams, given, pop=2)
    again = resolve_specs(DQNHParams, {name: spec_to_text(spec) for name, spec in specs.items()}, pop=2)
    assert again == specs
    assert spec_to_text(specs["eps_decay_steps"]) == "1234567,2e+06" and spec_to_text(specs["lr"]) == (
        "0.000123456789,0.0003")
    for text in ("1.5", "1,2.5", "choice:1,2.5"):
        with pytest.raises(ConfigError, match=r"^--hp.delay: must be a whole number \(got [12]\.5\)$"):
            resolve_specs(TD3HParams, {"delay": text}, pop=2)


@pytest.mark.parametrize("given, fragment", [
    # whatever the seed draws: every given value and both ends of a range are checked before any draw
    ({"delay": "choice:1,2.5"}, "--hp.delay: must be a whole number (got 2.5)"),
    ({"delay": "choice:1,2000"}, "--hp.delay: 2000 is outside the allowed range [1, 1000]"),
    ({"tau": "choice:0.005,3"}, "--hp.tau: 3 is outside the allowed range [0, 1]"),
    ({"delay": "2.0000001"}, "--hp.delay: must be a whole number (got 2.0000001)"),  # float64, not float32
    ({"gamma": "uniform:0.9,1.5"}, "--hp.gamma: 1.5 is outside the allowed range [0, 1]"),
    ({"delay": "uniform:1.2,1.8"}, "--hp.delay: uniform:1.2,1.8 holds no whole number"),
])
def test_a_value_that_some_seed_would_make_invalid_is_refused_before_drawing(given, fragment):
    """PBT later resamples a choice as given, so a bad choice must not pass because this seed missed it."""
    with pytest.raises(ConfigError, match="^" + fragment.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]").replace(".", r"\.") + "$"):
        resolve_specs(TD3HParams, given, pop=2)


@struct.dataclass
class LongHParams:
    """A user's algorithm with an integer hyperparameter beyond int32."""

    horizon: float = hparam(10, "Steps.", valid=(1, 1e12), search=(1, 1e11), integer=True)


def test_whole_numbers_beyond_int32_draw_without_overflow():
    specs = resolve_specs(LongHParams, {"horizon": "uniform:1,1e10"}, pop=64)
    drawn = np.asarray(sample_population(LongHParams, specs, jax.random.key(0), 64).horizon, np.float64)
    assert drawn.min() >= 1 and drawn.max() <= 1e10 and drawn.max() > 2**31
