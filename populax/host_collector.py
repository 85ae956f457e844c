"""The acting side of the host loop: the collector that steps the N x E
Gymnasium envs (all members act in one jitted call per env step), and the
deterministic evaluation episodes, with the seeds both draw from.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from populax.agents.base import Transition
from populax.envs.host_envs import (
    HostEnvSpec,
    final_observations,
    make_vector_env,
    to_env_actions,
)
from populax.host_member import HostFunctions, HostMember, HostPlan
from populax.obs_norm import RunningStats


class Block(NamedTuple):
    """What the collector hands the learner: ``block_iterations`` env iterations of all members."""

    transitions: Transition
    """Leaves shaped [N, B*E, ...] (row t*E + e is env e at iteration t)."""
    truncated: np.ndarray
    """[N, B*E] 1.0 where an episode hit its time limit (kept for bookkeeping and tests)."""
    stats: RunningStats
    """Observation statistics after the block (stacked over members)."""
    episode_returns: list[list[float]]
    """Returns of the episodes each member finished during the block."""
    acted_lag: int
    """Largest staleness (env steps per member) of the parameters that acted in the block."""
    keys: jax.Array
    """The collector's per-member RNG keys after the block (a checkpoint resumes collection from them)."""


class Collector:
    """Steps the N x E host envs; all members act in one jitted call per env step."""

    def __init__(self, spec: HostEnvSpec, plan: HostPlan, functions: HostFunctions, population: HostMember,
                 pop: int, mode: str, seed: int, keys: jax.Array | None = None, iterations: int = 0):
        """Envs reset with ``seed``; a resumed run passes its checkpoint's ``keys`` and ``iterations`` done."""
        self.spec, self.plan, self.functions, self.pop = spec, plan, functions, pop
        self.envs = make_vector_env(spec, pop * plan.envs_per_member, mode)
        obs, _ = self.envs.reset(seed=seed)
        self.obs = np.asarray(obs, spec.obs_dtype)
        self.episode_return = np.zeros(pop * plan.envs_per_member)
        self.keys = collector_keys(seed, pop) if keys is None else keys
        self.stats = population.obs_stats
        self.iterations = iterations
        # Acting parameters and the env steps per member they were published after.
        self.params = (population.agent, population.hparams)
        self.published_at = iterations * plan.envs_per_member
        self.cond = threading.Condition()
        self.stopped = False
        self.wait_s = 0.0

    @property
    def steps(self) -> int:
        """Env steps per member taken so far."""
        return self.iterations * self.plan.envs_per_member

    def publish(self, agent_state: Any, hparams: Any, steps: int) -> None:
        """Called by the learner: new acting parameters, trained on ``steps`` env steps per member."""
        with self.cond:
            self.params, self.published_at = (agent_state, hparams), steps
            self.cond.notify_all()

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
        end = self.steps + self.plan.block_steps
        return end - max(self.published_at, self.plan.learning_starts) if end > self.plan.learning_starts else 0

    def collect_block(self) -> Block | None:
        """Run one block of env iterations (None once the run's steps are done or stopped)."""
        remaining = self.plan.total_iterations - self.iterations
        if remaining <= 0 or not self._wait_for_fresh_params():
            return None
        n, e = self.pop, self.plan.envs_per_member
        agent_state, hparams = self.params
        acted_lag = max(0, self.steps + self.plan.block_steps - max(self.published_at, self.plan.learning_starts))
        rows: dict[str, list] = {k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")}
        finished: list[list[float]] = [[] for _ in range(n)]
        for _ in range(min(self.plan.block_iterations, remaining)):
            warming = jnp.full((n,), self.steps < self.plan.learning_starts)
            obs = self.obs.reshape(n, e, *self.spec.obs_shape)
            actions, self.stats, self.keys = self.functions.act(agent_state, self.stats, hparams, obs, self.keys, warming)
            actions = np.asarray(actions).reshape(n * e, *np.shape(actions)[2:])
            next_obs, reward, terminated, truncated, info = self.envs.step(to_env_actions(self.spec, actions))
            done = np.logical_or(terminated, truncated)
            rows["obs"].append(self.obs)
            rows["action"].append(actions)
            rows["reward"].append(np.asarray(reward, np.float32))
            rows["next_obs"].append(np.asarray(final_observations(next_obs, done, info), self.spec.obs_dtype))
            rows["terminated"].append(np.asarray(terminated, np.float32))
            rows["truncated"].append(np.asarray(truncated, np.float32))
            self.episode_return += reward
            for i in np.flatnonzero(done):
                finished[i // e].append(float(self.episode_return[i]))
                self.episode_return[i] = 0.0
            self.obs = np.asarray(next_obs, self.spec.obs_dtype)
            self.iterations += 1

        def per_member(name):  # [T, N*E, ...] -> [N, T*E, ...]
            x = np.stack(rows[name])
            t = x.shape[0]
            x = x.reshape(t, n, e, *x.shape[2:]).swapaxes(0, 1)
            return x.reshape(n, t * e, *x.shape[3:])

        transitions = Transition(*(per_member(k) for k in ("obs", "action", "reward", "next_obs", "terminated")))
        return Block(transitions, per_member("truncated"), self.stats, finished, acted_lag, self.keys)

    def close(self) -> None:
        """Close the vector env (ends async workers)."""
        self.envs.close()


def collector_keys(seed: int, pop: int) -> jax.Array:
    """The collector's per-member RNG keys at the start of a run."""
    return jax.random.split(jax.random.fold_in(jax.random.key(seed), 4), pop)


def eval_seed(seed: int, evaluation: int) -> int:
    """Env seed of the run's evaluation number ``evaluation`` (0-based); env ``i`` of it gets this + i."""
    return seed * 7919 + 1_000_003 * (evaluation + 1)


def resume_reset_seed(seed: int, env_step: int) -> int:
    """Seed the vector env is reset with when a run resumes at ``env_step`` (its envs' state is not saved)."""
    return int(np.random.SeedSequence([seed, env_step, 0x7265]).generate_state(1)[0])


def episode_totals(spec: HostEnvSpec, act: Callable[[np.ndarray], np.ndarray], num_envs: int, seed: int,
                   max_steps: int = 100_000) -> np.ndarray:
    """Undiscounted return of one episode in each of ``num_envs`` fresh envs (env i reset with seed + i).

    ``act`` maps observations [num_envs, ...] to agent actions [num_envs, ...].
    """
    envs = make_vector_env(spec, num_envs, "sync")
    try:
        obs, _ = envs.reset(seed=seed)
        total = np.zeros(num_envs)
        alive = np.ones(num_envs)
        for _ in range(max_steps):
            actions = act(np.asarray(obs, spec.obs_dtype))
            obs, reward, terminated, truncated, _ = envs.step(to_env_actions(spec, actions))
            total += alive * reward
            alive *= 1.0 - np.logical_or(terminated, truncated)
            if not alive.any():
                break
    finally:
        envs.close()
    return total


def evaluate(spec: HostEnvSpec, functions: HostFunctions, population: HostMember, episodes: int,
             seed: int, max_steps: int = 100_000) -> np.ndarray:
    """Mean return of ``episodes`` fresh episodes per member, deterministic policy, separate env instances.

    Member m's episode j runs in env ``m * episodes + j`` (seed ``seed + m * episodes + j``).
    """
    n = int(np.asarray(population.env_steps).shape[0])

    def act(obs: np.ndarray) -> np.ndarray:
        actions = np.asarray(functions.policy(population.agent, population.obs_stats,
                                              obs.reshape(n, episodes, *spec.obs_shape)))
        return actions.reshape(n * episodes, *actions.shape[2:])

    return episode_totals(spec, act, n * episodes, seed, max_steps).reshape(n, episodes).mean(axis=1)


def member_returns(spec: HostEnvSpec, functions: HostFunctions, member: HostMember, episodes: int, seed: int,
                   max_steps: int = 100_000) -> np.ndarray:
    """Per-episode returns of ONE member (no member axis) over ``episodes`` fresh episodes (seeds seed + j)."""

    def act(obs: np.ndarray) -> np.ndarray:
        return np.asarray(functions.member_policy(member.agent, member.obs_stats, obs))

    return episode_totals(spec, act, episodes, seed, max_steps)


