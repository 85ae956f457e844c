"""The compiled backend: JAX environments (gymnax, brax) inside one jitted chunk per executor.

Acting, env steps, the replay buffer (or rollout) and the updates of a whole
evaluation period run in one compiled program over the population; the
driver sees the members only between chunks. Every random draw comes from
keys in the members (training) or from the seed and chunk index
(evaluation), so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from populax.agents import Algorithm, check_action_space
from populax.backends.compiled.coupled import build_coupled_program
from populax.backends.compiled.episodes import cut_short, episode_returns, episode_steps
from populax.backends.compiled.program import MemberProgram, build_program
from populax.coupled import mean_policy_summary
from populax.edits import MemberEdits, apply_edits
from populax.envs.jax_envs import JaxEnv, describe_action, make_jax_env
from populax.errors import SaidOnce, evaluation_cut_warning
from populax.member import Member, finite_population, without_shared
from populax.population import donated, executor_shards, init_members, quiet_donation
from populax.run.config import TrainConfig

EVAL_KEY = 3
"""fold_in constant of the evaluation keys (1: hparams, 2: init, 4: strategy)."""


def eval_keys(seed: int, chunk: int, pop: int) -> jax.Array:
    """Keys of the evaluation after ``chunk``: fixed by seed, separate from training."""
    base = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), EVAL_KEY), chunk)
    return jax.random.split(base, pop)


class CompiledBackend:
    """JAX environments: ``advance`` is one executor call of the member program's ``train_chunk``."""

    kind = "compiled"

    def __init__(self, config: TrainConfig, algorithm: Algorithm, env: JaxEnv, executor: Callable,
                 donate: bool = False):
        """``donate``: ``advance`` updates the population in place (its input's buffers are donated and
        deleted); the caller keeps what it needs from before the chunk itself (the driver does)."""
        self.config, self.env = config, env
        build = build_coupled_program if algorithm.coupled else build_program
        self.loop, self.program = build(algorithm, config, env)
        self.executor = executor
        self.chunk_steps = self.loop.chunk_steps
        self.num_chunks = math.ceil(config.total_steps / self.chunk_steps)
        self._evaluate = executor(self.program.evaluate)
        self._init_agents = init_members(self.program.init_agent)
        if algorithm.coupled:  # the chunk couples the members: one jitted program, vmaps inside
            self._train_chunk = jax.jit(self.program.train_chunk, donate_argnums=donated(donate))
            self._init = jax.jit(self.program.init_population)
        else:
            self._train_chunk = executor(self.program.train_chunk, donate=donate)
            self._init = init_members(self.program.init, executor_shards(config.executor, config.pop))
        self.last_metrics: dict[str, Any] = {}
        self.said = SaidOnce()
        self.place = (np.arange(config.pop), config.pop)
        """(members, run's population): the members this backend runs within the run (see ``run_block``)."""

    @property
    def agent(self) -> Any:
        """One member's agent functions (``Agent``: a mixed-shape population distils with them)."""
        return self.program.agent

    def run_block(self, members: Sequence[int], run_pop: int) -> None:
        """Run members ``members`` of a run of ``run_pop`` (a Ray worker's block, a cohort of a mixed-shape
        population): their evaluations draw the run's keys for those members, as the whole run would."""
        self.place = (np.asarray(members, int), run_pop)

    # -- what the driver calls -------------------------------------------------------------

    def init_population(self, keys: jax.Array, hparams: Any) -> Member:
        """Every member's initial state (a compiled loop, never a vmap: see ``init_members``)."""
        return self._init(keys, hparams)

    def init_agents(self, keys: jax.Array, hparams: Any) -> Any:
        """Fresh agent states only, stacked over ``keys`` (no buffers or envs are allocated)."""
        return self._init_agents(keys, hparams)

    def start(self, population: Member, extra: Any = None) -> None:
        """Nothing to open: the environments live inside the members."""

    def advance(self, population: Member, chunk: int,
                should_stop: Callable[[], bool] | None = None) -> tuple[Member, dict[str, Any]]:
        """One compiled chunk: ``chunk_steps`` env steps and their updates for every member (one XLA call:
        a stop request is honoured after it); ``metrics["finite"]``: each member's state is free of NaN/Inf."""
        with quiet_donation():
            population, metrics = self._train_chunk(population)
        self.last_metrics = metrics
        return population, {**metrics, "finite": finite_population(population)}

    def evaluate(self, population: Member, chunk: int) -> np.ndarray:
        """Mean return of ``eval_episodes`` fresh episodes per member (keys from the seed and chunk)."""
        members, run_pop = self.place
        keys = eval_keys(self.config.seed, chunk, run_pop)[members]
        returns, running = self._evaluate(without_shared(population), keys)
        self.warn_if_cut(running)
        return np.asarray(returns)

    def apply_edits(self, population: Member, previous: Member, edits: MemberEdits, rows: Member | None = None) -> Member:
        """A strategy's edits, on the members the driver holds (the next chunk reads them directly); ``rows``:
        copy sources from elsewhere (``edits.apply_edits``)."""
        return apply_edits(population, previous, edits, self.init_agents, rows)

    def gather(self, population: Member, experience: bool = True) -> Member:
        """The driver holds the members whole."""
        return population

    def take_events(self) -> list[dict]:
        """No events of its own."""
        return []

    def extra_state(self) -> None:
        """The members hold everything (env states, keys, buffers)."""
        return None

    def stop(self) -> None:
        """Nothing to close."""

    def summary(self) -> dict[str, Any]:
        """CEM-RL: the CEM mean actor's return at the last generation (``mean_policy_return``)."""
        return mean_policy_summary(self.last_metrics)

    def warn_if_cut(self, running: Any) -> None:
        """Once per run, as on the host: evaluation episodes cut at populax's limit (the run's warnings registry
        cannot remember it: a catch_warnings around the call clears it)."""
        message = evaluation_cut_warning(self.env.name, episode_steps(self.env))
        if message not in self.said and cut_short(running, self.config.eval_max_steps):  # no host sync once said
            self.said.warn(message, stacklevel=3)

    # -- one saved member ------------------------------------------------------------------

    def member_returns(self, member: Member, member_index: int, chunk: int, episodes: int,
                       seed: int | None = None) -> np.ndarray:
        """Per-episode returns of one saved member; without ``seed`` the episodes of the run's evaluation after ``chunk``."""
        key = eval_keys(self.config.seed, chunk, self.place[1])[member_index] if seed is None else jax.random.key(seed)
        def returns(agent: Any, stats: Any, k: jax.Array) -> jax.Array:
            return episode_returns(lambda state, obs: self.program.policy(state, stats, obs), agent, self.env,
                                   episodes, k, self.config.eval_max_steps)

        totals, running = jax.jit(returns)(member.agent, member.obs_stats, key)
        self.warn_if_cut(running)
        return np.asarray(totals)

    def member_actor(self, member: Member) -> Callable[[np.ndarray], np.ndarray]:
        """Observations [M, ...] -> the env actions of one saved member's deterministic policy, as the training
        loop hands them to the environment (continuous: clipped to [-1, 1], rescaled to the env's bounds;
        ``--obs-norm``: observations standardised with the member's saved statistics)."""
        env = self.env

        @jax.jit
        def act(agent: Any, stats: Any, obs: jax.Array) -> jax.Array:
            action = self.program.policy(agent, stats, obs)
            return env.to_env_action(action if env.action.discrete else jnp.clip(action, -1.0, 1.0))

        return lambda obs: np.asarray(act(member.agent, member.obs_stats, np.asarray(obs, np.float32)))


def make_compiled_backend(config: TrainConfig, algorithm: Algorithm, env_id: str, executor: Callable,
                          donate: bool = False) -> CompiledBackend:
    """The compiled backend of a gymnax or brax:NAME environment id (ConfigError on an unusable combination);
    ``donate``: see :class:`CompiledBackend`."""
    env = make_jax_env(env_id, config.max_episode_steps)
    check_action_space(algorithm, env.action, config.env, describe_action(env.action))
    return CompiledBackend(config, algorithm, env, executor, donate)


__all__ = ["CompiledBackend", "MemberProgram", "eval_keys", "make_compiled_backend"]
