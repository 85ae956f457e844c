"""The host backend: Gymnasium / ALE environments, which cannot run inside ``jit``.

Split like the paper's actor/learner design, both halves reusing the
one-member pieces (agents, replay buffer, executors):

* the **collector** (``collector.py``) steps ONE Gymnasium vector env holding
  all N x E environments; every env step, all members act in ONE jitted
  executor call over the stacked agent states and observations;
* the **learner** (:class:`Learner`) inserts each block of transitions into the
  stacked per-member replay buffers and runs compiled chunks of updates until
  the update-to-data ratio is met exactly (``LoopShape.owed_updates``); an
  on-policy member (PPO) learns from each block as one rollout instead.

A chunk (the driver's unit) is ``chunk_blocks`` blocks. With ``overlap`` (off-policy
only) the collector runs in a background thread (JAX releases the GIL while
it computes, MuJoCo/ALE steps release it in C), so env stepping and updates
proceed at the same time, bounded by ``max_policy_lag``: the collector may act
at most that many env steps per member past the data the acting parameters
were published after. Without ``overlap`` the two alternate in one thread and
a run is reproducible from its seed. See docs/host_envs.md.

Checkpoints hold what the learner has consumed (the members, the collector RNG
keys of its last block, the update count); Gymnasium cannot save its envs'
internal state, so a resumed run resets them with a seed derived from the
run's seed and the checkpoint's step, losing the episodes in flight.
"""

from __future__ import annotations

import math
import queue
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from populax.agents import Algorithm, check_action_space
from populax.agents.options import resolve_options
from populax.backends.host.collector import (
    Block,
    Collector,
    collector_keys,
    env_actions,
    eval_seed,
    evaluate,
    member_env_seeds,
    member_returns,
    resume_reset_seed,
)
from populax.backends.host.coupled import CoupledHooks, coupled_plan, make_coupled_host, mean_policy_return
from populax.backends.host.member import HostFunctions, HostPlan, make_functions, make_plan
from populax.coupled import mean_policy_summary
from populax.edits import MemberEdits, apply_edits
from populax.envs.host_envs import VECTOR_MODES, HostEnvSpec, make_host_spec
from populax.envs.jax_envs import describe_action
from populax.errors import ConfigError, EnvironmentWarning, SaidOnce
from populax.loop.shape import agent_spec as loop_agent_spec
from populax.member import Member, finite_population, member_steps, where_members
from populax.population import executor_shards
from populax.run.config import TrainConfig


class Learner:
    """The learner's side: insert blocks (or learn from rollouts), keep the update-to-data ratio."""

    def __init__(self, plan: HostPlan, functions: HostFunctions, pop: int):
        self.plan, self.functions, self.pop = plan, functions, pop
        self.busy_s = 0.0
        self.metrics: list[dict[str, Any]] = []

    def consume(self, population: Member, block: Block) -> Member:
        """``population`` after learning from ``block``."""
        start = time.perf_counter()
        if self.plan.on_policy:
            population, metrics = self.functions.learn_rollout(population, block.rows, block.truncated,
                                                               block.last_obs)
            self.metrics.append(metrics)
        else:
            before = member_steps(population)
            population = self.functions.insert(population, block.rows, block.stats)
            learn_from = int(np.max(np.asarray(population.learn_from)))
            owed = self.plan.loop.owed_updates(before, member_steps(population), learn_from)
            while owed > 0:
                count = min(self.plan.update_chunk, owed)
                learned, metrics = self.functions.learn(population, jnp.full((self.pop,), count, jnp.int32))
                population = learned.replace(experience=population.experience)  # read only: not returned
                self.metrics.append(metrics)
                owed -= count
        jax.block_until_ready(population.agent)
        self.busy_s += time.perf_counter() - start
        return population

    def take_metrics(self) -> dict[str, np.ndarray]:
        """Mean of the learner metrics since the last call (per member)."""
        if not self.metrics:
            return {}
        names = self.metrics[0].keys()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: no actor step ran (TD3's delay), reported as NaN
            out = {n: np.nanmean(np.stack([np.asarray(m[n], np.float64) for m in self.metrics]), axis=0) for n in names}
        self.metrics = []
        return out


class HostBackend:
    """Gymnasium/ALE environments behind the driver's backend interface (see ``populax.backends``)."""

    kind = "host"

    def __init__(self, config: TrainConfig, algorithm: Algorithm, spec: HostEnvSpec, executor: Callable):
        self.config, self.spec = config, spec
        self.said = SaidOnce()
        options = resolve_options(algorithm.options, config.algo_options, algorithm.name)
        self.on_policy = algorithm.on_policy
        self.coupled: CoupledHooks | None = None
        if algorithm.coupled:  # CEM-RL / DvD-TD3: population steps around the collector (host/coupled.py)
            self.plan = coupled_plan(config, algorithm.name, options, spec)
            self.functions, self.coupled = make_coupled_host(config, algorithm, options, spec, self.plan,
                                                             executor)
            self.chunk_steps = self.plan.chunk_steps
            self.num_chunks = math.ceil(config.total_steps / self.chunk_steps)
            self._reset_session()
            return
        self.plan = make_plan(config, algorithm.on_policy, getattr(options, "rollout_len", 0))
        self.chunk_steps = self.plan.chunk_steps
        self.num_chunks = math.ceil(config.total_steps / self.chunk_steps)
        total_steps = self.num_chunks * self.chunk_steps
        agent_spec = loop_agent_spec(algorithm, config, spec.obs_shape, spec.action, options, self.plan.loop,
                                     total_steps)
        self.agent = algorithm.make(agent_spec)
        """One member's agent functions (``Agent``: a mixed-shape population distils with them)."""
        self.functions = make_functions(self.agent, spec, self.plan, executor, config.obs_norm,
                                        executor_shards(config.executor, config.pop))
        self._reset_session()

    place: tuple[np.ndarray | None, int | None] = (None, None)
    """(the run's indices of these members or None: 0..pop-1, the run's population or None: this one): the
    members this backend runs within the run (a Ray worker's block, a cohort of a mixed-shape population)."""

    def run_block(self, members: Sequence[int], run_pop: int) -> None:
        """Run members ``members`` of a run of ``run_pop`` (a Ray worker's block, a cohort: need not be
        consecutive): env resets, collector keys and evaluation seeds are the run's for those members."""
        self.place = (np.asarray(members, np.int64), run_pop)

    @property
    def run_members(self) -> np.ndarray:
        """The run's indices of this backend's members."""
        members = self.place[0]
        return np.arange(self.config.pop) if members is None else members

    def _reset_session(self) -> None:
        """Per-run state: a backend (its compiled functions) may serve several runs one after another."""
        self.collector: Collector | None = None
        self.learner: Learner | None = None
        self.thread: threading.Thread | None = None
        self.blocks: queue.Queue = queue.Queue()
        self.failure: list[BaseException] = []
        self.keys: jax.Array | None = None
        self.max_lag = 0
        self.eval_s = 0.0
        # Steady state: the chunks after this session's first (compilation done), evaluation excluded.
        self.steady_s = 0.0
        self.steady_steps = 0
        self.steady_busy_s = 0.0
        self.chunks_advanced = 0
        self.episode_returns: list[list[float]] = []
        self.started_at = time.perf_counter()
        self.edit: tuple[int, np.ndarray] | None = None
        """(collector generation, members) of the strategy edits blocks in flight do not carry yet."""
        self.last_metrics: dict[str, Any] = {}

    @property
    def overlap(self) -> bool:
        """Collect in a background thread (off-policy only: PPO acts with the newest parameters)."""
        return self.config.overlap and not self.on_policy and (self.coupled is None or self.coupled.overlap)

    # -- what the driver calls -------------------------------------------------------------

    def init_population(self, keys: jax.Array, hparams: Any) -> Member:
        """Every member's initial learner-side state."""
        return self.functions.init(keys, hparams)

    def init_agents(self, keys: jax.Array, hparams: Any) -> Any:
        """Fresh agent states only, stacked over ``keys``."""
        return self.functions.init_agents(keys, hparams)

    def start(self, population: Member, extra: Any = None) -> None:
        """Open the envs (reset from the seed, or a seed derived from the resume step) and the collector thread."""
        self._reset_session()
        config = self.config
        steps = member_steps(population)
        run_pop = self.place[1]
        seed = self._reset_seed(steps)
        self.keys = collector_keys(config.seed, run_pop or config.pop)[self.run_members] if extra is None else \
            jax.random.wrap_key_data(jnp.asarray(extra["collector_keys"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Gymnasium/MuJoCo deprecation chatter at env creation
            self.collector = Collector(self.spec, self.plan, self.functions, population, config.pop, config.vector_env,
                                       seed=seed, keys=self.keys, iterations=steps // self.plan.envs_per_member)
        self.learner = Learner(self.plan, self.functions, config.pop)
        self.episode_returns = [[] for _ in range(config.pop)]
        if self.overlap:
            self.thread = threading.Thread(target=self._produce, name="populax-collector", daemon=True)
            self.thread.start()

    def _reset_seed(self, steps: int) -> list[int]:
        """Seeds of a reset of this backend's envs at ``steps`` env steps per member: the run's seed at the
        start, else one derived from the step (a resume, a CEM-RL generation, a cohort whose members changed),
        each member's envs at its place in the run (``member_env_seeds``)."""
        seed = self.config.seed if steps == 0 else resume_reset_seed(self.config.seed, steps)
        return member_env_seeds(seed, self.run_members, self.plan.envs_per_member)

    def _produce(self) -> None:
        try:
            while (block := self.collector.collect_block()) is not None:
                self.blocks.put(block)
        except BaseException as error:  # surfaced in the main thread
            self.failure.append(error)
        finally:
            self.blocks.put(None)

    def _next_block(self) -> Block:
        block = self.blocks.get() if self.thread is not None else self.collector.collect_block()
        if block is None:
            raise self.failure[0] if self.failure else RuntimeError("the host collector stopped")
        return block

    def advance(self, population: Member, chunk: int,
                should_stop: Callable[[], bool] | None = None) -> tuple[Member, dict[str, Any]]:
        """Consume blocks up to the end of ``chunk``: insert, update, publish the new parameters after each.

        A stop request (``should_stop``) ends the chunk early after the current
        block, so Ctrl-C answers within a block however long the evaluation
        period; a resumed run continues the chunk from there.
        """
        start, busy, steps = time.perf_counter(), self.learner.busy_s, member_steps(population)
        end = (chunk + 1) * self.chunk_steps
        begun: dict[str, Any] = {}
        if self.coupled is not None and self.coupled.begin is not None:
            # CEM-RL: a new generation of actors; a generation is never split by a stop request.
            population, begun = self.coupled.begin(population)
            self.collector.publish(population.agent, population.hparams, member_steps(population), None)
            if self.coupled.fresh_episodes:  # the new actors act (and are scored) from a reset
                self.collector.reset_envs(self._reset_seed(member_steps(population)))
            should_stop = None
        while member_steps(population) < end:
            if should_stop is not None and should_stop():
                break
            block = self._keep_edited_stats(self._next_block(), population)
            population = self.learner.consume(population, block)
            self.keys = block.keys
            self.max_lag = max(self.max_lag, block.acted_lag)
            for member, finished in enumerate(block.episode_returns):
                self.episode_returns[member].extend(finished)
            # On-policy runs alternate, so the learner's statistics (updated after each rollout) are the collector's.
            self.collector.publish(population.agent, population.hparams, member_steps(population),
                                   population.obs_stats if self.on_policy else None)
        metrics = self.learner.take_metrics()
        metrics["train_return"] = np.array([np.mean(r) if r else np.nan for r in self.episode_returns])
        if self.coupled is not None and member_steps(population) >= end:
            population, metrics = self._finish_coupled(population, chunk, {**metrics, **begun})
        self.episode_returns = [[] for _ in range(self.config.pop)]
        if self.chunks_advanced > 0:
            self.steady_s += time.perf_counter() - start
            self.steady_steps += member_steps(population) - steps
            self.steady_busy_s += self.learner.busy_s - busy
        self.chunks_advanced += 1
        return population, {**metrics, "finite": finite_population(population)}

    def _finish_coupled(self, population: Member, chunk: int, metrics: dict[str, Any]) -> tuple[Member, dict]:
        """The coupled method's end of chunk (DvD: diversity and bandit; CEM-RL: tell, mean actor's return)."""
        # CEM-RL's fitness: episodes acted from start to end by the generation's actors (reset at its start).
        fitness = self.collector.first_episode_returns().astype(np.float32)
        population, extra = self.coupled.finish(population, fitness, metrics["train_return"])
        metrics = {**metrics, **{name: np.asarray(value) for name, value in extra.items()}}
        if self.coupled.mean_actor is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = mean_policy_return(self.spec, self.functions, self.coupled, population,
                                           self.config.eval_episodes, eval_seed(self.config.seed, chunk),
                                           self.config.eval_max_steps)
            metrics["mean_policy_return"] = np.full(self.config.pop, value)
        self.last_metrics = metrics
        return population, metrics

    def evaluate(self, population: Member, chunk: int) -> np.ndarray:
        """Mean return of ``eval_episodes`` fresh episodes per member in separate envs seeded from the chunk."""
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:  # the eval envs' Gymnasium notes, said in training
            warnings.simplefilter("always")
            returns = evaluate(self.spec, self.functions, population, self.config.eval_episodes,
                               seed=member_env_seeds(eval_seed(self.config.seed, chunk), self.run_members,
                                                     self.config.eval_episodes),
                               max_steps=self.config.eval_max_steps)
        for warning in caught:  # but populax's own about the environment (episodes cut): once per run
            if issubclass(warning.category, EnvironmentWarning):
                self.said.warn(warning.message)
        self.eval_s += time.perf_counter() - start
        return returns

    def apply_edits(self, population: Member, previous: Member, edits: MemberEdits, rows: Member | None = None) -> Member:
        """A strategy's edits, on the learner's members (``rows``: copy sources from elsewhere); the collector
        acts with the edited members' parameters and statistics from its next block on."""
        population = apply_edits(population, previous, edits, self.init_agents, rows)
        mask = edits.edited()
        if mask.any():
            self._publish_edits(population, mask)
        return population

    def _publish_edits(self, population: Member, mask: np.ndarray) -> None:
        if self.edit is not None:
            mask = mask | self.edit[1]
        self.edit = (self.collector.replace_members(population, mask), mask)

    def _keep_edited_stats(self, block: Block, population: Member) -> Block:
        """A block collected before the last strategy edit carries the edited members' old observation
        statistics: keep the edited ones (a copy's statistics go with its copied actor)."""
        if self.edit is None:
            return block
        generation, mask = self.edit
        if block.generation >= generation:
            self.edit = None
            return block
        return block._replace(stats=where_members(mask, population.obs_stats, block.stats))

    def gather(self, population: Member, experience: bool = True) -> Member:
        """The driver holds the members whole."""
        return population

    def take_events(self) -> list[dict]:
        """No events of its own."""
        return []

    def extra_state(self) -> dict[str, Any]:
        """The collector keys after the last consumed block (the update count follows from the members' steps)."""
        return {"collector_keys": jax.random.key_data(self.keys)}

    def stop(self) -> None:
        """End the collector thread and close the envs."""
        if self.collector is None:
            return
        self.collector.stop()
        if self.thread is not None:
            while self.thread.is_alive():  # unblock a producer waiting on a full hand-off
                try:
                    self.blocks.get(timeout=0.1)
                except queue.Empty:
                    pass
            self.thread.join()
        self.collector.close()

    def summary(self) -> dict[str, Any]:
        """summary.json's ``host`` section: how collection and learning shared the time."""
        advance_s = self.steady_s
        return {**mean_policy_summary(self.last_metrics), "host": {
            "vector_env": self.config.vector_env,
            "overlap": self.overlap,
            "learner_busy_fraction": self.learner.busy_s / (time.perf_counter() - self.started_at) if self.learner else 0.0,
            "collector_wait_s": self.collector.wait_s if self.collector else 0.0,
            "max_policy_lag_seen": self.max_lag,
            "eval_s": self.eval_s,
            # After the first chunk, evaluation excluded: what the benchmark reports.
            "steady_env_steps_per_s": self.config.pop * self.steady_steps / advance_s if advance_s > 0 else None,
            "steady_learner_busy_fraction": self.steady_busy_s / advance_s if advance_s > 0 else None,
        }}

    # -- one saved member ------------------------------------------------------------------

    def member_returns(self, member: Member, member_index: int, chunk: int, episodes: int,
                       seed: int | None = None) -> np.ndarray:
        """Per-episode returns of one saved member; without ``seed`` the env seeds of the run's evaluation after ``chunk``."""
        if seed is None:
            seed = eval_seed(self.config.seed, chunk) + member_index * self.config.eval_episodes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return member_returns(self.spec, self.functions, member, episodes, seed, self.config.eval_max_steps)

    def member_actor(self, member: Member) -> Callable[[np.ndarray], np.ndarray]:
        """Observations [M, ...] -> the env actions of one saved member's deterministic policy, as the collector
        hands them to the environments (``--obs-norm``: standardised with the member's saved statistics)."""
        def act(obs: np.ndarray) -> np.ndarray:
            obs = np.asarray(obs, self.spec.obs_dtype)
            return env_actions(self.spec, np.asarray(self.functions.member_policy(member.agent, member.obs_stats, obs)))

        return act


def make_host_backend(config: TrainConfig, algorithm: Algorithm, env_id: str, executor: Callable) -> HostBackend:
    """The host backend of a Gymnasium/ALE id (ConfigError on an unusable setting or environment)."""
    if config.vector_env not in VECTOR_MODES:
        raise ConfigError(f"--vector-env: unknown mode {config.vector_env!r}; allowed: {', '.join(VECTOR_MODES)}")
    if config.max_episode_steps < 0:
        raise ConfigError(f"--max-episode-steps must be >= 0 (0: the environment's own limit; got {config.max_episode_steps})")
    spec = make_host_spec(env_id, terminal_on_life_loss=config.terminal_on_life_loss,
                          max_episode_steps=config.max_episode_steps or None)
    check_action_space(algorithm, spec.action, env_id, describe_action(spec.action))
    return HostBackend(config, algorithm, spec, executor)


__all__ = ["HostBackend", "make_host_backend"]
