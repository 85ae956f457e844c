"""A user's algorithm is checked when it is loaded: its hyperparameter declarations, its policy fields and what
its agent's functions return (built for a stand-in environment, traced for shapes only). Each mistake is one line
naming the algorithm's import path and what to fix (exit 2, nothing written), not a traceback from inside a run.
The mistakes are tests/broken_algorithms.py's; populax's own algorithms and the example pass the same checks."""

import jax
import pytest
from custom_algorithm import DDPG

from populax import ConfigError, register_algorithm
from populax.agents import ALGORITHMS, check_algorithm
from populax.agents.checks import check_agent, check_policy_fields
from populax.cli import main
from populax.hparams import check_declarations

REFUSED = [
    ("POLICY_FIELD_TYPO", "'s policy_fields name 'actr', not a field of its agent's state (DDPGState: actor, critic, "
                          "actor_target, critic_target, actor_opt, critic_opt)"),
    ("POLICY_FIELDS_STRING", "'s policy_fields is the string 'actor'; give a tuple of the agent state's field names, "
                             "('actor',)"),
    ("OPTIMIZER_FIELD_TYPO", "'s optimizer_fields name 'actor_optim', not a field of its agent's state (DDPGState: "
                             "actor, critic, actor_target, critic_target, actor_opt, critic_opt)"),
    ("PLAIN", "'s hparams PlainHParams have undeclared fields lr_actor, lr_critic, gamma, tau, sigma; declare each "
              "traced hyperparameter with populax.hparams.hparam(default, doc, valid=(LO, HI), search=(LO, HI))"),
    ("DEFAULT_OUTSIDE", " declares lr_critic's default 5 outside its valid range [0, 1]; fix its hparam(...) in "
                        "BrokenHParams"),
    ("SEARCH_OUTSIDE", " declares gamma's search range [0.9, 1.5] outside its valid range [0, 1]; fix its "
                       "hparam(...) in BrokenHParams"),
    ("EMPTY_VALID", " declares tau's valid range [1, 0] empty: LO must not exceed HI"),
    ("FRACTIONAL_INTEGER", " declares sigma's default 0.5 fractional; it is declared integer"),
    ("NO_POLICY", "'s make builds an Agent(...) without policy (policy(state, obs) -> action, deterministic, for "
                  "evaluation)"),
    ("STATE_ONLY_UPDATE", "'s update(state, batch, key, hparams) must return (state, metrics), the new state and a "
                          "dict of metrics; it returned a DDPGState"),
    ("LOSS_AS_METRICS", "must return (state, metrics) with metrics a dict of named numbers; its metrics are an "
                        "array of shape ()"),
    ("GROWING_STATE", "'s update(state, batch, key, hparams) changes DDPGState.critic_opt.count from int32[] "
                      "to int32[2]; the new state must keep init's shapes and dtypes"),
    ("ONE_ACTION", "'s act(state, obs, key, hparams) must return one action per observation (an action vector "
                   "each: shape (4, 1) for 4 observations of a 1-dimensional space); it returned an array of "
                   "shape (1,)"),
    ("ONPOLICY_AGENT", "'s make must return a populax.agents.base.Agent (it is off-policy); it returned an "
                       "OnPolicyAgent; an OnPolicyAgent is on-policy's: declare Algorithm(..., on_policy=True)"),
    ("ACT_WITHOUT_HPARAMS", "'s act must take the arguments act(state, obs, key, hparams) (too many positional "
                            "arguments)"),
    ("HPARAM_TYPO", "'s act(state, obs, key, hparams) reads a hyperparameter it does not declare ('DDPGHParams' "
                    "object has no attribute 'sgma'; declared: lr_actor, lr_critic, gamma, tau, sigma)"),
    ("A2C_VALUE_COLUMN", "'s value(state, obs) must return a value estimate per observation (shape (4,) for 4 "
                         "observations); it returned an array of shape (4, 1)"),
    ("A2C_LOG_PROB_PER_ACTION", "'s act(state, obs, key) must return a log-probability per observation (shape (4,) "
                                "for 4 observations); it returned an array of shape (4, 2)"),
    ("A2C_ACT_WITH_HPARAMS", "'s act must take the arguments act(state, obs, key) (missing a required argument: "
                             "'hp')"),
]


@pytest.mark.parametrize("name, fragment", REFUSED, ids=[name for name, _ in REFUSED])
def test_a_broken_algorithm_is_one_line_before_anything_is_written(tmp_path, capsys, name, fragment):
    out = tmp_path / "run"
    algo = f"py:broken_algorithms:{name}"
    short = ["--pop", "2", "--total-steps", "400", "--eval-every", "200", "--learning-starts", "100", "--hidden",
             "8,8", "--no-progress", "--no-tensorboard"]  # (were it not refused)
    assert main(["train", "--algo", algo, "--env", "Pendulum-v1", *short, "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"populax: error: --algo: {algo}") and fragment in lines[0], lines
    assert not out.exists()
    assert main(["algos", algo]) == 2  # `populax algos` lists nothing of it either
    assert capsys.readouterr().err.strip() == lines[0]


def test_register_algorithm_refuses_them_too_naming_the_registration():
    import broken_algorithms

    with pytest.raises(ConfigError, match=r"^--algo: register_algorithm\('ddpg-no-policy'\)'s make builds an "
                                          r"Agent\(\.\.\.\) without policy"):
        register_algorithm(broken_algorithms.NO_POLICY)
    assert "ddpg-no-policy" not in ALGORITHMS


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_populax_own_algorithms_pass_the_checks(name, monkeypatch):
    """Every built-in declaration is consistent; every per-member agent builds and answers as the loops expect
    (the coupled methods' members are their actors: their policy fields are fields of one). Strict: a probe that
    fails to trace raises here (a user's is left to the run), so a skipped probe cannot pass."""
    from populax.agents import checks

    monkeypatch.setattr(checks, "STRICT", True)
    algorithm = ALGORITHMS[name]
    check_declarations(algorithm.hparams, name)
    if algorithm.coupled:
        from populax.agents import AgentSpec
        from populax.agents.base import ActionSpec
        from populax.coupled.shared_td3 import init_actor

        nets = algorithm.make(AgentSpec((3,), ActionSpec(False, 1), (8,), algorithm.options()))
        check_policy_fields(algorithm.policy_fields, jax.eval_shape(lambda: init_actor(nets, jax.random.key(0))),
                            name)
    else:
        check_agent(algorithm, name)
        if algorithm.continuous and algorithm.discrete:  # and on a discrete space where it has one
            check_agent(algorithm._replace(continuous=False), name)
        check_algorithm(algorithm, name)


def test_the_example_passes_them_and_is_traced_once():
    from populax.agents import CHECKED_AGENTS, get_algorithm

    assert get_algorithm("py:custom_algorithm:DDPG") is DDPG and id(DDPG) in CHECKED_AGENTS
    assert check_algorithm(DDPG, "again") is DDPG


def test_numpy_bounds_in_a_declaration_are_numbers_too():
    """valid=(np.float32(0), np.float32(1)) is two numbers (refused as 'expected (LO, HI)' at first)."""
    import numpy as np
    from flax import struct

    from populax.hparams import hparam

    @struct.dataclass
    class NumpyBounds:
        gamma: float = hparam(0.99, "Discount.", valid=(np.float32(0), np.float32(1)), search=(np.int64(0), 1))

    check_declarations(NumpyBounds, "numpy-bounds")


def test_options_read_plain_and_postponed_annotations_and_name_a_type_they_cannot_take():
    """An options dataclass in a module without ``from __future__ import annotations`` (its field types are
    the types, not their names) crashed with KeyError "<class 'int'>" on any --algo-opt; a field of a type the
    command line cannot give was a KeyError too."""
    import dataclasses

    from populax.agents.options import DQNOptions, resolve_options

    @dataclasses.dataclass(frozen=True)
    class PlainOptions:
        rollout_len: int = 8
        max_grad_norm: float = 0.5
        widths: tuple = (64, 64)

    assert not isinstance(dataclasses.fields(PlainOptions)[0].type, str)  # this module does not postpone them
    options = resolve_options(PlainOptions, {"rollout-len": "16", "max-grad-norm": "1"}, "a2c")
    assert (options.rollout_len, options.max_grad_norm) == (16, 1.0)
    assert isinstance(dataclasses.fields(DQNOptions)[0].type, str)  # populax's own postpone them
    assert resolve_options(DQNOptions, {"dueling": "true"}, "dqn").dueling is True
    with pytest.raises(ConfigError, match=r"^--algo-opt.widths: a2c's option is annotated <class 'tuple'>; an "
                                          r"algorithm option is one of bool, int, float, str$"):
        resolve_options(PlainOptions, {"widths": "1"}, "a2c")


def test_a_decorator_that_supplies_an_argument_is_not_taken_for_a_wrong_signature():
    """The argument check reads the wrapper's own signature: ``functools.wraps`` makes ``inspect.signature``
    report the wrapped function's (one argument more), which refused this correct act."""
    import functools

    from custom_algorithm import make_ddpg

    def with_agent(agent):
        def decorate(fn):
            @functools.wraps(fn)
            def act(state, obs, key, hparams):
                return fn(agent, state, obs, key, hparams)
            return act
        return decorate

    def make(spec):
        agent = make_ddpg(spec)

        @with_agent(agent)
        def act(base, state, obs, key, hparams):
            return base.act(state, obs, key, hparams)

        return agent._replace(act=act)

    check_algorithm(DDPG._replace(name="ddpg-decorated", make=make), "py:test:DECORATED")  # no ConfigError
