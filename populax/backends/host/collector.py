"""The acting side of the host backend: the collector that steps the N x E
Gymnasium envs (all members act in one jitted call per env step), and the
deterministic evaluation episodes, with the seeds both draw from.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from populax.agents.base import STORED_FIELDS, Transition
from populax.backends.host.member import HostFunctions, HostPlan, RolloutRows
from populax.envs.host_envs import (
    HostEnvSpec,
    final_observations,
    learning_terminals,
    make_vector_env,
    to_env_actions,
)
from populax.errors import evaluation_cut_warning
from populax.loop.shape import learning_rewards
from populax.member import Member, where_members
from populax.obs_norm import RunningStats
from populax.run.config import EVAL_STEP_LIMIT

ROW_NAMES = ("obs", "action", "reward", "next_obs", "terminated", "truncated")


class Block(NamedTuple):
    """What the collector hands the learner: ``block_iterations`` env iterations of all members."""

    rows: Transition | RolloutRows
    """Off-policy: transitions; on-policy: rollout rows. Leaves [N, B*E, ...] (row t*E + e is env e at iteration t)."""
    truncated: np.ndarray
    """[N, B*E] 1.0 where an episode hit its time limit (PPO bootstraps there)."""
    last_obs: np.ndarray
    """[N, E, ...] observations after the block (PPO's last value)."""
    stats: RunningStats
    """Observation statistics after the block (stacked over members)."""
    episode_returns: list[list[float]]
    """Returns of the episodes each member finished during the block."""
    acted_lag: int
    """Largest staleness (env steps per member) of the parameters that acted in the block."""
    keys: jax.Array
    """The collector's per-member RNG keys after the block (a checkpoint resumes collection from them)."""
    generation: int = 0
    """How many strategy edits the collector had applied when the block started."""


def finite_actions(actions: np.ndarray) -> np.ndarray:
    """Non-finite actions (a diverged member's, until the strategy replaces it) become 0 (+-1 for +-inf).

    They are what the envs execute and what the buffer stores, so neither the
    envs nor the data a fresh or copied agent learns from are poisoned.
    """
    if not np.issubdtype(actions.dtype, np.floating):
        return actions
    return np.nan_to_num(actions, nan=0.0, posinf=1.0, neginf=-1.0)


def env_actions(spec: HostEnvSpec, actions: np.ndarray) -> np.ndarray:
    """What the envs receive: continuous actions clipped to [-1, 1] (PPO samples beyond it), then rescaled."""
    if not spec.action.discrete:
        actions = np.clip(actions, -1.0, 1.0)
    return to_env_actions(spec, actions)


class Collector:
    """Steps the N x E host envs; all members act in one jitted call per env step."""

    def __init__(self, spec: HostEnvSpec, plan: HostPlan, functions: HostFunctions, population: Member,
                 pop: int, mode: str, seed: int | list[int], keys: jax.Array, iterations: int = 0):
        """Envs reset with ``seed`` (env i: ``seed + i``, or the list's i-th); collection continues after
        ``iterations`` env iterations with RNG ``keys``."""
        self.spec, self.plan, self.functions, self.pop = spec, plan, functions, pop
        self.envs = make_vector_env(spec, pop * plan.envs_per_member, mode)
        obs, _ = self.envs.reset(seed=seed)
        self.obs = np.asarray(obs, spec.obs_dtype)
        self.episode_return = np.zeros(pop * plan.envs_per_member)
        self.first_return = np.full(pop * plan.envs_per_member, np.nan)
        """Per env: the return of the first episode it finished since the last reset (NaN before one)."""
        self.keys = keys
        self.stats = population.obs_stats
        self.iterations = iterations
        # Acting parameters and the env steps per member they were published after.
        self.params = (population.agent, population.hparams)
        self.published_at = iterations * plan.envs_per_member
        self.stats_override: tuple[np.ndarray, Any] | None = None
        self.generation = 0
        """Strategy edits applied so far; each block records the generation it was collected under."""
        self.cond = threading.Condition()
        self.stopped = False
        self.wait_s = 0.0

    @property
    def steps(self) -> int:
        """Env steps per member taken so far."""
        return self.iterations * self.plan.envs_per_member

    def publish(self, agent_state: Any, hparams: Any, steps: int, stats: Any = None) -> None:
        """Called by the learner: new acting parameters, trained on ``steps`` env steps per member
        (and, for on-policy runs, the observation statistics the learner updated)."""
        with self.cond:
            self.params, self.published_at = (agent_state, hparams), steps
            if stats is not None:
                self.stats = stats
            self.cond.notify_all()

    def replace_members(self, population: Member, mask: np.ndarray) -> int:
        """A strategy edited members ``mask``: act with their new parameters and observation statistics
        from the next block on. Returns the generation of blocks that carry the edit."""
        with self.cond:
            self.params = (population.agent, population.hparams)
            if self.stats_override is not None:  # an earlier edit not applied yet: keep it too
                mask = mask | self.stats_override[0]
            self.stats_override = (mask, population.obs_stats)
            self.generation += 1
            self.cond.notify_all()
            return self.generation

    def reset_envs(self, seed: int | list[int]) -> None:
        """Start a fresh episode in every env (env i reset with ``seed + i``, or the list's i-th); the episodes in flight are
        dropped. Call only while no block is being collected (CEM-RL: a generation's start, no overlap)."""
        obs, _ = self.envs.reset(seed=seed)
        self.obs = np.asarray(obs, self.spec.obs_dtype)
        self.episode_return[:] = 0.0
        self.first_return[:] = np.nan

    def first_episode_returns(self) -> np.ndarray:
        """[N] per member: the mean over its envs of the first episode each finished since the last
        ``reset_envs`` (the running episode's return where none has): with a reset at a generation's start,
        episodes that one actor acted from their first step to their last (CEM-RL's fitness, as compiled)."""
        value = np.where(np.isnan(self.first_return), self.episode_return, self.first_return)
        return value.reshape(self.pop, self.plan.envs_per_member).mean(axis=1)

    def stop(self) -> None:
        """Wake and end the collector thread."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def _wait_for_fresh_params(self) -> bool:
        """Block while acting would exceed the staleness bound; False when stopped."""
        start = time.perf_counter()
        with self.cond:
            while not self.stopped and self._lag_after_block() > self.plan.max_policy_lag:
                self.cond.wait()
        self.wait_s += time.perf_counter() - start
        return not self.stopped

    def _lag_after_block(self) -> int:
        # The warm-up acts randomly, so parameters cannot be stale before learning starts.
        end, random_steps = self.steps + self.plan.block_steps, self.plan.random_steps
        return end - max(self.published_at, random_steps) if end > random_steps else 0

    def collect_block(self) -> Block | None:
        """Run one block of env iterations (None when stopped)."""
        if not self._wait_for_fresh_params():
            return None
        n, e = self.pop, self.plan.envs_per_member
        with self.cond:
            agent_state, hparams = self.params
            if self.stats_override is not None:
                mask, stats = self.stats_override
                self.stats, self.stats_override = where_members(mask, stats, self.stats), None
            generation = self.generation
        acted_lag = max(0, self.steps + self.plan.block_steps - max(self.published_at, self.plan.random_steps))
        rows: dict[str, list] = {k: [] for k in ROW_NAMES}
        finished: list[list[float]] = [[] for _ in range(n)]
        for _ in range(self.plan.block_iterations):
            warming = jnp.full((n,), self.steps < self.plan.random_steps)
            obs = self.obs.reshape(n, e, *self.spec.obs_shape)
            actions, extras, self.stats, self.keys = self.functions.act(agent_state, self.stats, hparams, obs, self.keys,
                                                                        warming)
            actions = finite_actions(np.asarray(actions).reshape(n * e, *np.shape(actions)[2:]))
            next_obs, reward, terminated, truncated, info = self.envs.step(env_actions(self.spec, actions))
            done = np.logical_or(terminated, truncated)
            rows["obs"].append(self.obs)
            rows["action"].append(actions)
            rows["reward"].append(learning_rewards(np.asarray(reward, np.float32), self.plan.loop))
            rows["next_obs"].append(np.asarray(final_observations(next_obs, done, info), self.spec.obs_dtype))
            # A lost life ends the *training* episode (no bootstrap) while the game goes on (--terminal-on-life-loss).
            rows["terminated"].append(learning_terminals(terminated, info))
            rows["truncated"].append(np.asarray(truncated, np.float32))
            for name, value in extras.items():
                rows.setdefault(name, []).append(np.asarray(value).reshape(n * e))
            self.episode_return += reward
            for i in np.flatnonzero(done):
                finished[i // e].append(float(self.episode_return[i]))
                if np.isnan(self.first_return[i]):
                    self.first_return[i] = self.episode_return[i]
                self.episode_return[i] = 0.0
            self.obs = np.asarray(next_obs, self.spec.obs_dtype)
            self.iterations += 1

        def per_member(name):  # [T, N*E, ...] -> [N, T*E, ...]
            x = np.stack(rows[name])
            t = x.shape[0]
            x = x.reshape(t, n, e, *x.shape[2:]).swapaxes(0, 1)
            return x.reshape(n, t * e, *x.shape[3:])

        if self.plan.on_policy:
            data = RolloutRows(*(per_member(k) for k in RolloutRows._fields))
        else:
            data = Transition(*(per_member(k) for k in STORED_FIELDS))
        last_obs = self.obs.reshape(n, e, *self.spec.obs_shape)
        return Block(data, per_member("truncated"), last_obs, self.stats, finished, acted_lag, self.keys, generation)

    def close(self) -> None:
        """Close the vector env (ends async workers)."""
        self.envs.close()


def collector_keys(seed: int, pop: int) -> jax.Array:
    """The collector's per-member RNG keys at the start of a run."""
    return jax.random.split(jax.random.fold_in(jax.random.key(seed), 4), pop)


def eval_seed(seed: int, evaluation: int) -> int:
    """Env seed of the run's evaluation number ``evaluation`` (0-based); env ``i`` of it gets this + i."""
    return seed * 7919 + 1_000_003 * (evaluation + 1)


def member_env_seeds(seed: int, members: Sequence[int], per_member: int) -> list[int]:
    """Env seeds of ``per_member`` envs of each of ``members`` (the run's member indices): member m's env j gets
    ``seed + m * per_member + j``, so a member's envs are seeded alike wherever it runs (a Ray worker's block,
    a cohort of a mixed-shape population: members that need not be consecutive)."""
    return [int(seed) + int(m) * per_member + j for m in members for j in range(per_member)]


def resume_reset_seed(seed: int, env_step: int) -> int:
    """Seed the vector env is reset with when a run resumes at ``env_step`` (its envs' state is not saved)."""
    return int(np.random.SeedSequence([seed, env_step, 0x7265]).generate_state(1)[0])


def episode_totals(spec: HostEnvSpec, act: Callable[[np.ndarray], np.ndarray], num_envs: int,
                   seed: int | list[int], max_steps: int = 0) -> np.ndarray:
    """Undiscounted return of one episode in each of ``num_envs`` fresh envs (env i reset with seed + i, or
    the list's i-th).

    Each episode is cut after ``max_steps`` steps (``--eval-max-steps``), or 0: after ``EVAL_STEP_LIMIT``, with
    an EnvironmentWarning when an episode was still running there (a cut the user set is silent).
    ``act`` maps observations [num_envs, ...] to agent actions [num_envs, ...].
    Non-finite actions are passed on as they are, so a diverged member's return is not finite.
    """
    envs = make_vector_env(spec, num_envs, "sync")
    try:
        obs, _ = envs.reset(seed=seed)
        total = np.zeros(num_envs)
        alive = np.ones(num_envs)
        for _ in range(max_steps or EVAL_STEP_LIMIT):
            actions = np.asarray(act(np.asarray(obs, spec.obs_dtype)))
            bad = ~np.isfinite(actions.reshape(num_envs, -1).astype(np.float64)).all(axis=1)
            total[bad & (alive > 0)] = np.nan
            obs, reward, terminated, truncated, _ = envs.step(env_actions(spec, actions))
            total += alive * reward
            alive *= 1.0 - np.logical_or(terminated, truncated)
            if not alive.any():
                break
    finally:
        envs.close()
    if alive.any() and not max_steps:
        warnings.warn(evaluation_cut_warning(spec.name, EVAL_STEP_LIMIT), stacklevel=2)
    return total


def evaluate(spec: HostEnvSpec, functions: HostFunctions, population: Member, episodes: int,
             seed: int | list[int], max_steps: int = 0) -> np.ndarray:
    """Mean return of ``episodes`` fresh episodes per member, deterministic policy, separate env instances.

    Member m's episode j runs in env ``m * episodes + j`` (seed ``seed + m * episodes + j``, or that entry of
    the list: ``member_env_seeds``).
    """
    n = int(np.asarray(population.env_steps).shape[0])

    def act(obs: np.ndarray) -> np.ndarray:
        actions = np.asarray(functions.policy(population.agent, population.obs_stats,
                                              obs.reshape(n, episodes, *spec.obs_shape)))
        return actions.reshape(n * episodes, *actions.shape[2:])

    return episode_totals(spec, act, n * episodes, seed, max_steps).reshape(n, episodes).mean(axis=1)


def member_returns(spec: HostEnvSpec, functions: HostFunctions, member: Member, episodes: int, seed: int,
                   max_steps: int = 0) -> np.ndarray:
    """Per-episode returns of ONE member (no member axis) over ``episodes`` fresh episodes (seeds seed + j)."""

    def act(obs: np.ndarray) -> np.ndarray:
        return np.asarray(functions.member_policy(member.agent, member.obs_stats, obs))

    return episode_totals(spec, act, episodes, seed, max_steps)
