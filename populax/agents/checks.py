"""What a user's algorithm must return, checked once when it is loaded (``--algo py:module:NAME``,
``register_algorithm``) instead of as a traceback from inside a run.

The algorithm is built for a stand-in environment (a 3-number observation; a one-dimensional continuous or a
two-action discrete action) and its functions are traced for shapes only (``jax.eval_shape``: nothing is
compiled or allocated): its ``make`` must build an :class:`~populax.agents.base.Agent` (or an
:class:`~populax.agents.base.OnPolicyAgent`) with every function, its ``policy_fields`` must be fields of the
state ``init`` returns, ``act``/``policy`` must answer one action per observation and ``update`` must return
``(state, metrics)`` with the state as ``init`` shapes it (an on-policy agent's ``value`` and act's log-prob and
value: one number per observation). A function that fails on the stand-in itself (an algorithm for images, say)
is left to the run, which builds it for the real environment, unless it fails in a way no environment changes:
it does not take the loop's arguments, or it reads a hyperparameter its algorithm does not declare.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from populax.agents.base import ActionSpec, Agent, AgentSpec, MissingAgentFunction, OnPolicyAgent, Rollout, Transition
from populax.errors import ConfigError
from populax.hparams import hparam_infos

PROBE_OBS = (3,)
"""The stand-in environment's observation shape."""
PROBE_BATCH = 4
"""Observations per act/policy call and transitions per update batch."""
PROBE_ENVS = 2
"""Envs of a probe rollout (its length is the algorithm's ``rollout_len``)."""


FIELD_DECLARATIONS = {"policy_fields": "None for the whole state", "optimizer_fields": "None when not declared"}
"""The Algorithm's declarations of agent-state field names, and what None means for each."""


def check_policy_fields_declared(policy_fields: Any, where: str, what: str = "policy_fields") -> None:
    """``policy_fields`` (or the declaration ``what``: ``FIELD_DECLARATIONS``) must be None or a non-empty tuple
    of field names (``("actor",)``, not ``"actor"``)."""
    if policy_fields is None:
        return
    if isinstance(policy_fields, str):
        raise ConfigError(f"--algo: {where}'s {what} is the string {policy_fields!r}; give a tuple of the "
                          f"agent state's field names, ({policy_fields!r},)")
    if not isinstance(policy_fields, (tuple, list)) or not policy_fields or not all(
            isinstance(name, str) for name in policy_fields):
        raise ConfigError(f"--algo: {where}'s {what} must be a non-empty tuple of the agent state's field "
                          f"names, or {FIELD_DECLARATIONS[what]} (got {policy_fields!r})")


def check_policy_fields(policy_fields: tuple[str, ...] | None, state: Any, where: str,
                        what: str = "policy_fields") -> None:
    """Every name in ``policy_fields`` (what ``--pbt-copy policy`` copies; or the declaration ``what``) is a
    field of the agent ``state``."""
    if policy_fields is None:
        return
    if not (dataclasses.is_dataclass(state) and hasattr(state, "replace")):
        raise ConfigError(f"--algo: {where} declares {what}, but its init returns {describe(state)}; the "
                          f"fields are copied from a flax struct.dataclass state (or declare {what}=None)")
    fields = [f.name for f in dataclasses.fields(state)]
    unknown = [name for name in policy_fields if name not in fields]
    if unknown:
        raise ConfigError(f"--algo: {where}'s {what} name {', '.join(map(repr, unknown))}, not "
                          f"{'a field' if len(unknown) == 1 else 'fields'} of its agent's state "
                          f"({type(state).__name__}: {', '.join(fields)})")


def describe(value: Any) -> str:
    """What a function returned, in a few words: ``a DDPGState``, ``a tuple of 3``, ``None``."""
    if value is None:
        return "None"
    if isinstance(value, (tuple, list)) and not hasattr(value, "_fields"):
        return f"a {type(value).__name__} of {len(value)}"
    if isinstance(value, jax.ShapeDtypeStruct):
        return f"an array of shape {value.shape}"
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def probe_spec(algorithm: Any) -> Any:
    """The stand-in environment's AgentSpec: continuous actions if the algorithm takes them, else discrete."""
    action = ActionSpec(False, 1) if algorithm.continuous else ActionSpec(True, 2)
    options = algorithm.options() if algorithm.options is not None else None
    return AgentSpec(PROBE_OBS, action, (8,), options, total_updates=1)


def probe_hparams(hparams_type: type) -> Any:
    """Every declared hyperparameter at its default, as one member's traced float32 scalars (shapes only)."""
    return hparams_type(**{name: jax.ShapeDtypeStruct((), jnp.float32) for name in hparam_infos(hparams_type)})


STRICT = False
"""When True (the tests of populax's own algorithms), a function that fails on the stand-in raises instead of
being left to the run, so a skipped probe cannot pass for a checked one."""


def traced(fn: Any, *args: Any, where: str = "", signature: str = "") -> tuple[bool, Any]:
    """``(True, shapes of fn(*args))``, or ``(False, None)`` when tracing it fails (left to the run: it may need
    an environment unlike the stand-in). Two mistakes no environment changes are refused here (ConfigError
    naming ``where``'s ``signature``): a function that does not take the loop's arguments (an off-policy
    ``act(state, obs, key, hparams)`` written for an on-policy agent, whose act takes no hparams), and one that
    reads a hyperparameter its algorithm does not declare."""
    try:
        return True, jax.eval_shape(fn, *args)
    except Exception as error:  # noqa: BLE001 - it may need an environment unlike the stand-in; the run reports it
        mistake = users_mistake(error, fn, args)
        if mistake is not None:
            raise ConfigError(f"--algo: {where}'s {mistake(signature)}") from None
        if STRICT:
            raise
        return False, None


def users_mistake(error: Exception, fn: Any, args: tuple) -> Any:
    """For a tracing ``error`` no environment would change, a function of the call's signature giving what to
    say; else None."""
    if isinstance(error, TypeError):
        mismatch = arguments_mismatch(fn, args)
        if mismatch is not None:
            return lambda signature: f"{signature.split('(')[0]} must take the arguments {signature} ({mismatch})"
    hparams = args[-1]
    if (isinstance(error, AttributeError) and dataclasses.is_dataclass(hparams)
            and f"'{type(hparams).__name__}' object has no attribute" in str(error)):
        declared = ", ".join(f.name for f in dataclasses.fields(hparams))
        return lambda signature: (f"{signature} reads a hyperparameter it does not declare ({error}; declared: "
                                  f"{declared})")
    return None


def arguments_mismatch(fn: Any, args: tuple) -> str | None:
    """Why ``fn`` cannot be called with ``args`` by its own signature, or None when it can (or has none to read).
    The wrapper's own signature (``follow_wrapped=False``): a ``functools.wraps`` decorator that supplies an
    argument reports the inner function's otherwise."""
    try:
        inspect.signature(fn, follow_wrapped=False).bind(*args)
    except TypeError as error:
        return str(error)
    except ValueError:  # no signature to read (a builtin, some wrappers)
        return None
    return None


def check_per_observation(value: Any, where: str, signature: str, what: str) -> None:
    """``value`` (a log-probability or a value estimate for PROBE_BATCH observations) is one number each."""
    if value is None and what == "a log-probability":  # an update that never reads it (A2C) may leave it out
        return
    if not isinstance(value, jax.ShapeDtypeStruct) or value.shape != (PROBE_BATCH,):
        raise ConfigError(f"--algo: {where}'s {signature} must return {what} per observation (shape "
                          f"{(PROBE_BATCH,)} for {PROBE_BATCH} observations); it returned {describe(value)}")


def check_action(action: Any, spec: ActionSpec, where: str, signature: str) -> None:
    """``action`` (what ``act`` or ``policy`` returned for PROBE_BATCH observations) is one action each."""
    expected = (PROBE_BATCH,) if spec.discrete else (PROBE_BATCH, spec.size)
    if not isinstance(action, jax.ShapeDtypeStruct) or action.shape != expected:
        kind = "an action index each" if spec.discrete else "an action vector each"
        raise ConfigError(f"--algo: {where}'s {signature} must return one action per observation ({kind}: shape "
                          f"{expected} for {PROBE_BATCH} observations of a {spec.size}-"
                          f"{'action' if spec.discrete else 'dimensional'} space); it returned {describe(action)}")


def check_update_output(out: Any, state: Any, where: str, signature: str) -> None:
    """``update`` returned ``(state, metrics)``: a state shaped as ``init``'s and a dict of metrics."""
    if not (isinstance(out, tuple) and not hasattr(out, "_fields") and len(out) == 2):
        raise ConfigError(f"--algo: {where}'s {signature} must return (state, metrics), the new state and a dict "
                          f"of metrics; it returned {describe(out)}")
    new_state, metrics = out
    if jax.tree.structure(new_state) != jax.tree.structure(state):
        raise ConfigError(f"--algo: {where}'s {signature} must return the new state as init builds it "
                          f"({describe(state)} of the same fields); it returned {describe(new_state)} with "
                          f"{'other fields' if type(new_state) is type(state) else 'another structure'}")
    for (path, before), after in zip(jax.tree_util.tree_flatten_with_path(state)[0], jax.tree.leaves(new_state),
                                     strict=True):
        if (before.shape, before.dtype) != (after.shape, after.dtype):
            leaf = f"{type(state).__name__}{jax.tree_util.keystr(path)}"
            raise ConfigError(f"--algo: {where}'s {signature} changes {leaf} from {before.dtype}{list(before.shape)} "
                              f"to {after.dtype}{list(after.shape)}; the new state must keep init's shapes and dtypes")
    if not (isinstance(metrics, Mapping) and all(isinstance(key, str) for key in metrics)):
        raise ConfigError(f"--algo: {where}'s {signature} must return (state, metrics) with metrics a dict of "
                          f"named numbers; its metrics are {describe(metrics)}")


def check_agent(algorithm: Any, where: str) -> None:
    """Build ``algorithm`` for the stand-in environment and check what its functions return (shapes only); a
    one-line ConfigError naming ``where`` and what to fix."""
    kind = OnPolicyAgent if algorithm.on_policy else Agent
    try:
        spec = probe_spec(algorithm)  # its options at their defaults
        agent = algorithm.make(spec)
    except MissingAgentFunction as error:
        raise ConfigError(f"--algo: {where}'s make builds an {error}") from None
    except Exception:  # noqa: BLE001 - it may need an environment unlike the stand-in; the run reports it
        if STRICT:
            raise
        return
    if not isinstance(agent, kind):
        other = Agent if algorithm.on_policy else OnPolicyAgent
        hint = (f"; an {other.__name__} is on-policy's: declare Algorithm(..., on_policy="
                f"{not algorithm.on_policy})" if isinstance(agent, other) else "")
        raise ConfigError(f"--algo: {where}'s make must return a populax.agents.base.{kind.__name__} (it is "
                          f"{'on' if algorithm.on_policy else 'off'}-policy); it returned {describe(agent)}{hint}")
    not_callable = [name for name in kind._fields if name != "distill" and not callable(getattr(agent, name))]
    if not_callable:
        raise ConfigError(f"--algo: {where}'s make returns an {kind.__name__} whose {', '.join(not_callable)} "
                          f"{'is' if len(not_callable) == 1 else 'are'} not callable")
    key = jax.eval_shape(lambda: jax.random.key(0))
    hparams = probe_hparams(algorithm.hparams)
    built, state = traced(agent.init, key, hparams, where=where, signature="init(key, hparams)")
    if not built:
        return
    check_policy_fields(algorithm.policy_fields, state, where)
    check_policy_fields(algorithm.optimizer_fields, state, where, "optimizer_fields")
    obs = jax.ShapeDtypeStruct((PROBE_BATCH, *PROBE_OBS), jnp.float32)
    if algorithm.on_policy:
        check_onpolicy(agent, state, obs, key, hparams, spec, where)
        return
    signature = "act(state, obs, key, hparams)"
    acted, action = traced(agent.act, state, obs, key, hparams, where=where, signature=signature)
    if acted:
        check_action(action, spec.action, where, signature)
    chosen, action = traced(agent.policy, state, obs, where=where, signature="policy(state, obs)")
    if chosen:
        check_action(action, spec.action, where, "policy(state, obs)")
    stored = jax.ShapeDtypeStruct((PROBE_BATCH,), jnp.float32)
    actions = (jax.ShapeDtypeStruct((PROBE_BATCH,), jnp.int32) if spec.action.discrete
               else jax.ShapeDtypeStruct((PROBE_BATCH, spec.action.size), jnp.float32))
    batch = Transition(obs, actions, stored, obs, stored)
    signature = "update(state, batch, key, hparams)"
    updated, out = traced(agent.update, state, batch, key, hparams, where=where, signature=signature)
    if updated:
        check_update_output(out, state, where, signature)


def check_onpolicy(agent: OnPolicyAgent, state: Any, obs: Any, key: Any, hparams: Any, spec: Any, where: str) -> None:
    """The on-policy functions: act's (action, log_prob, value), value's value, policy's action, update's
    (state, metrics); one number per observation where the loop takes one."""
    signature = "act(state, obs, key)"
    acted, out = traced(agent.act, state, obs, key, where=where, signature=signature)
    if acted and not (isinstance(out, tuple) and len(out) == 3):
        raise ConfigError(f"--algo: {where}'s {signature} must return (action, log_prob, value); it "
                          f"returned {describe(out)}")
    if acted:
        check_action(out[0], spec.action, where, signature)
        check_per_observation(out[1], where, signature, "a log-probability")
        check_per_observation(out[2], where, signature, "a value estimate")
    valued, value = traced(agent.value, state, obs, where=where, signature="value(state, obs)")
    if valued:
        check_per_observation(value, where, "value(state, obs)", "a value estimate")
    chosen, action = traced(agent.policy, state, obs, where=where, signature="policy(state, obs)")
    if chosen:
        check_action(action, spec.action, where, "policy(state, obs)")
    lead = (max(1, int(spec.options.rollout_len)), PROBE_ENVS)  # check_algorithm made sure it declares one
    number = jax.ShapeDtypeStruct(lead, jnp.float32)
    actions = (jax.ShapeDtypeStruct(lead, jnp.int32) if spec.action.discrete
               else jax.ShapeDtypeStruct((*lead, spec.action.size), jnp.float32))
    rollout = Rollout(jax.ShapeDtypeStruct((*lead, *PROBE_OBS), jnp.float32), actions, number, number, number, number)
    signature = "update(state, rollout, advantages, returns, key, hparams)"
    updated, out = traced(agent.update, state, rollout, number, number, key, hparams, where=where,
                          signature=signature)
    if updated:
        check_update_output(out, state, where, signature)
