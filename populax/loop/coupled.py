"""The coupled methods' population-level learners (CEM-RL, DvD-TD3), written once for both backends.

Their members act alone (each actor in its own envs, mapped like any member's loop) and meet in the update:
one shared critic trained on everyone's data, a distribution over all actors (CEM-RL), a loss over all actors
(DvD-TD3). Those meeting steps are here, over the whole population (``Member`` stacked, the shared state in
``Member.shared``); the compiled chunk (``backends/compiled/coupled.py``) and the host learner
(``backends/host/coupled.py``) call them around their own acting.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct
from jax.flatten_util import ravel_pytree

from populax.agents.options import CEMRLOptions, DvDOptions
from populax.coupled import dvd
from populax.coupled.cem import CEMState, cem_ask, cem_init, cem_tell
from populax.coupled.shared_td3 import (
    ActorState,
    CriticState,
    Nets,
    actor_state,
    actors_step,
    critic_step,
    first_member,
    init_critic,
    q_values,
    skip_or,
    soft_update_critic,
    stack_one,
    union_sample,
)
from populax.errors import ConfigError
from populax.member import Member
from populax.run.config import TrainConfig

SHARED_KEY = 5
"""fold_in constant of the shared state's key (from member 0's init key)."""


def per_member(metrics: dict[str, jax.Array], pop: int) -> dict[str, jax.Array]:
    """Per-member means of metrics shaped [..., pop] over their leading (step) axes, NaN entries ignored."""
    return {name: jnp.nanmean(value.reshape(-1, pop), axis=0) for name, value in metrics.items()}


def population_wide(metrics: dict[str, jax.Array], pop: int) -> dict[str, jax.Array]:
    """Metrics of one shared thing (one value per step, any shape): their mean, NaN entries ignored, the same
    for every member (the metrics log is per member)."""
    return {name: jnp.full((pop,), jnp.nanmean(value)) for name, value in metrics.items()}


def deterministic_act(nets: Nets):
    """Acting without exploration noise (CEM-RL: the sampled actors are the exploration)."""
    return lambda state, obs, key, hparams: nets.actor.apply(state.actor, obs)


def noisy_act(nets: Nets):
    """TD3's Gaussian exploration noise around the member's actor."""

    def act(state: ActorState, obs: jax.Array, key: jax.Array, hparams: Any) -> jax.Array:
        action = nets.actor.apply(state.actor, obs)
        return jnp.clip(action + hparams.sigma * jax.random.normal(key, action.shape), -1.0, 1.0)

    return act


def check_pop(config: TrainConfig) -> None:
    """Both methods need at least two members."""
    if config.pop < 2:
        raise ConfigError(f"--pop: {config.algo} couples the members and needs at least 2 (got {config.pop})")




@struct.dataclass
class CEMRLShared:
    """CEM-RL's population-level state."""

    critic: CriticState
    cem: CEMState
    key: jax.Array


def check_cemrl_options(options: CEMRLOptions, pop: int) -> None:
    """Validate CEM-RL's options (ConfigError naming the option)."""
    if options.parents < 0 or options.parents > pop:
        raise ConfigError(f"--algo-opt.parents must be in [0, --pop] (got {options.parents})")
    for name in ("sigma_init", "damp", "damp_limit"):
        if getattr(options, name) < 0:
            raise ConfigError(f"--algo-opt.{name.replace('_', '-')} must be >= 0 (got {getattr(options, name)})")
    if not 0 < options.damp_decay <= 1:
        raise ConfigError(f"--algo-opt.damp-decay must be in (0, 1] (got {options.damp_decay})")
    if options.generation_steps < 0:
        raise ConfigError(f"--algo-opt.generation-steps must be >= 0 (got {options.generation_steps})")


class CEMRLSteps(NamedTuple):
    """CEM-RL's population-level steps, shared by both backends (the acting in between is theirs)."""

    init_shared: Any
    """``(keys [P], members) -> CEMRLShared``: a fresh critic, the CEM centred on member 0's actor."""
    begin: Any
    """``population -> (population, metrics)``: ask, then the shared critic's and the first pop/2 actors' steps."""
    finish: Any
    """``(population, fitness [P]) -> (population, metrics)``: tell."""
    mean_actor: Any
    """``shared -> ActorState`` of the CEM mean."""


def make_cemrl_steps(config: TrainConfig, nets: Nets, options: CEMRLOptions, generation_steps: int) -> CEMRLSteps:
    """CEM-RL's ask / gradient phase / tell; ``generation_steps``: env steps per member per generation."""
    check_pop(config)
    pop = config.pop
    check_cemrl_options(options, pop)
    n_grad = pop // 2
    # The original's schedule: as many gradient steps as env steps in the last generation (all members).
    gradient_steps = max(1, round(config.updates_per_step * pop * generation_steps))
    _, unravel = ravel_pytree(nets.actor.init(jax.random.key(0), nets.obs0))  # the layout only

    def init_shared(keys: jax.Array, members: Member) -> CEMRLShared:
        critic_key, key = jax.random.split(jax.random.fold_in(keys[0], SHARED_KEY))
        mean = ravel_pytree(first_member(members.agent.actor))[0]
        return CEMRLShared(init_critic(nets, critic_key), cem_init(mean, options), key)

    def gradient_phase(population: Member, critic: CriticState, grads: ActorState, key: jax.Array):
        """S critic steps, and the first pop/2 actors' TD3 steps from the shared critic."""
        hp0 = first_member(population.hparams)
        lr, tau = population.hparams.lr_actor[:n_grad], population.hparams.tau[:n_grad]

        def step(carry, index):
            critic, grads = carry
            batch_key, target_key = jax.random.split(jax.random.fold_in(key, index))
            batch = union_sample(population.experience, batch_key, config.batch_size, config.n_step, hp0.gamma,
                                 config.envs_per_member)
            target_actor = jax.tree.map(lambda x: x[index % n_grad], grads.actor_target)
            critic, critic_loss, q_mean = critic_step(nets, critic, stack_one(batch), stack_one(target_actor),
                                                      target_key, hp0)

            def actor_steps(args):
                critic, grads = args
                loss_fn = lambda actor: -jnp.mean(q_values(nets, critic.critic, actor, batch.obs))  # noqa: E731
                losses, gradients = jax.vmap(jax.value_and_grad(loss_fn))(grads.actor)
                return (soft_update_critic(critic, hp0.tau), actors_step(grads, gradients, lr, tau)), losses

            is_policy_step = critic.updates % jnp.maximum(jnp.round(hp0.delay), 1).astype(jnp.int32) == 0
            (critic, grads), actor_loss = jax.lax.cond(
                is_policy_step, actor_steps, lambda args: (args, jnp.full((n_grad,), jnp.nan)), (critic, grads))
            # The one critic's loss is one value per step; the actor losses one per member ([pop]).
            return (critic, grads), ({"critic_loss": critic_loss, "q_mean": q_mean},
                                     {"actor_loss": jnp.concatenate([actor_loss, jnp.full((pop - n_grad,), jnp.nan)])})

        def update(carry):
            return jax.lax.scan(step, carry, jnp.arange(gradient_steps))

        return skip_or(population.env_steps[0] > population.learn_from[0], update, (critic, grads))

    def begin(population: Member) -> tuple[Member, dict[str, jax.Array]]:
        shared: CEMRLShared = population.shared
        key, ask_key, update_key = jax.random.split(shared.key, 3)
        samples = cem_ask(shared.cem, ask_key, options, pop)
        agent = jax.vmap(actor_state)(jax.vmap(unravel)(samples), population.agent.updates)
        grads = jax.tree.map(lambda x: x[:n_grad], agent)
        (critic, grads), (critic_metrics, actor_metrics) = gradient_phase(population, shared.critic, grads, update_key)
        agent = jax.tree.map(lambda all_, trained: all_.at[:n_grad].set(trained), agent, grads)
        metrics = {**population_wide(critic_metrics, pop), **per_member(actor_metrics, pop)}
        return population.replace(agent=agent, shared=shared.replace(critic=critic, key=key)), metrics

    def finish(population: Member, fitness: jax.Array) -> tuple[Member, dict[str, jax.Array]]:
        shared: CEMRLShared = population.shared
        cem = cem_tell(shared.cem, jax.vmap(lambda a: ravel_pytree(a)[0])(population.agent.actor), fitness, options)
        metrics = {"fitness": fitness, "cem_std": jnp.full((pop,), jnp.mean(jnp.sqrt(cem.var)))}
        return population.replace(shared=shared.replace(cem=cem)), metrics

    def mean_actor(shared: CEMRLShared) -> ActorState:
        return actor_state(unravel(shared.cem.mean), jnp.zeros((), jnp.int32))

    return CEMRLSteps(init_shared, begin, finish, mean_actor)


@struct.dataclass
class DvDShared:
    """DvD-TD3's population-level state."""

    critic: CriticState | None
    """The shared twin critic (None with per-member critics: they live in the members' ``ActorState``)."""
    bandit: dvd.Bandit
    lam: jax.Array
    """The diversity weight of the coming chunk."""
    key: jax.Array


LAMBDA_MODES = ("bandit", "schedule", "fixed")
CRITIC_MODES = ("shared", "per-member")


def own_critics(options: Any) -> bool:
    """Whether every member trains its own critic (DvD-TD3's ``--algo-opt.critics per-member``)."""
    return isinstance(options, DvDOptions) and options.per_member_critics


def parse_arms(text: str) -> tuple[float, ...]:
    """The bandit's lambda values from ``"0,0.5"`` (ConfigError naming the option)."""
    try:
        arms = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--algo-opt.lambda-arms: expected comma-separated numbers (got {text!r})") from None
    if len(arms) < 1 or any(not math.isfinite(a) or a < 0 for a in arms):
        raise ConfigError(f"--algo-opt.lambda-arms: expected non-negative numbers (got {text!r})")
    return arms


def check_dvd_options(options: DvDOptions, batch_size: int) -> tuple[float, ...]:
    """Validate DvD's options; return the bandit's arms."""
    if options.lambda_mode not in LAMBDA_MODES:
        raise ConfigError(f"--algo-opt.lambda-mode: got {options.lambda_mode!r}; allowed: {', '.join(LAMBDA_MODES)}")
    if options.critics not in CRITIC_MODES:
        raise ConfigError(f"--algo-opt.critics: got {options.critics!r}; allowed: {', '.join(CRITIC_MODES)}")
    for name in ("bandwidth", "jitter"):
        if not getattr(options, name) > 0:
            raise ConfigError(f"--algo-opt.{name} must be > 0 (got {getattr(options, name)})")
    if not 1 <= options.embedding_states <= batch_size:  # the joint loss embeds the first states of a batch
        raise ConfigError(f"--algo-opt.embedding-states must be in [1, --batch-size = {batch_size}] "
                          f"(got {options.embedding_states})")
    if options.lambda_fixed < 0 or options.lambda_warmup < 0:
        raise ConfigError("--algo-opt.lambda-fixed and --algo-opt.lambda-warmup must be >= 0")
    for name in ("bandit_window", "bandit_lookback"):
        if getattr(options, name) < 1:
            raise ConfigError(f"--algo-opt.{name.replace('_', '-')} must be >= 1 (got {getattr(options, name)})")
    return parse_arms(options.lambda_arms)


class DvDSteps(NamedTuple):
    """DvD-TD3's population-level steps, shared by both backends (the acting in between is theirs)."""

    init_shared: Any
    """``(keys [P]) -> DvDShared``: a fresh shared critic (if shared), the bandit's priors, lambda 0."""
    learn: Any
    """``population -> (population, metrics)``: one critic step (the shared critic, or each member's own) and
    (every `delay`) the actors' joint step."""
    finish: Any
    """``(population, train returns [P]) -> (population, metrics)``: diversity, bandit, next lambda."""
    sample_batches: Any
    """``(experience, key, hparams [P]) -> batches [P, B]``: each member's batch of a step (``learn`` draws them)."""


def make_dvd_steps(config: TrainConfig, nets: Nets, options: DvDOptions) -> DvDSteps:
    """DvD-TD3's update and end-of-chunk steps (see the module docstring)."""
    check_pop(config)
    arms = jnp.asarray(check_dvd_options(options, config.batch_size), jnp.float32)
    pop = config.pop
    warmup = max(options.lambda_warmup, config.learning_starts)
    own = own_critics(options)

    def embeddings(actors: dict, states: jax.Array) -> jax.Array:
        return jax.vmap(lambda actor: nets.actor.apply(actor, states))(actors)

    def next_lambda(bandit: dvd.Bandit, env_steps: jax.Array) -> jax.Array:
        if options.lambda_mode == "schedule":
            lam = dvd.schedule_lambda(env_steps * pop)
        elif options.lambda_mode == "fixed":
            lam = jnp.float32(options.lambda_fixed)
        else:
            lam = jnp.where(bandit.arm >= 0, arms[jnp.maximum(bandit.arm, 0)], 0.0)
        return jnp.where(env_steps >= warmup, lam, 0.0).astype(jnp.float32)

    def init_shared(keys: jax.Array) -> DvDShared:
        critic_key, key = jax.random.split(jax.random.fold_in(keys[0], SHARED_KEY))
        bandit = dvd.bandit_init(options.bandit_window, options.bandit_lookback)
        critic = None if own else init_critic(nets, critic_key)
        return DvDShared(critic, bandit, next_lambda(bandit, jnp.int32(0)), key)

    def critics_step(critic: CriticState | None, agent: ActorState, batches: Any, key: jax.Array, hp: Any):
        """The shared critic's step on every member's batch, or each member's critic on its own batch.
        Returns (shared critic, agent, critic steps taken, per-member loss, per-member mean Q)."""
        if not own:
            critic, loss, q_mean = critic_step(nets, critic, batches, agent.actor_target, key, first_member(hp))
            return critic, agent, critic.updates, jnp.full((pop,), loss), jnp.full((pop,), q_mean)

        def one(critic, batch, target_actor, key, hp):
            return critic_step(nets, critic, stack_one(batch), stack_one(target_actor), key, hp)

        critics, loss, q_mean = jax.vmap(one)(agent.critic, batches, agent.actor_target, jax.random.split(key, pop), hp)
        # Members step in lockstep; a re-initialised member's counter restarts, the others' do not.
        return critic, agent.replace(critic=critics), jnp.max(critics.updates), loss, q_mean

    def soft_update(critic: CriticState | None, agent: ActorState, hp: Any):
        """The critic targets' Polyak updates (each member's own tau with per-member critics)."""
        if not own:
            return soft_update_critic(critic, first_member(hp).tau), agent
        return critic, agent.replace(critic=jax.vmap(soft_update_critic)(agent.critic, hp.tau))

    def sample_batches(experience: Any, key: jax.Array, hp: Any) -> Any:
        """One batch per member [P, B, ...] from the shared replay; n-step sums discounted with that member's
        own gamma, the gamma its critic bootstraps with (with one shared critic every gamma is member 0's:
        ``check_shared_hparams`` refuses per-member values)."""
        return jax.vmap(union_sample, in_axes=(None, 0, None, None, 0, None))(
            experience, jax.random.split(key, pop), config.batch_size, config.n_step, hp.gamma,
            config.envs_per_member)

    def learn(population: Member) -> tuple[Member, dict[str, jax.Array]]:
        shared: DvDShared = population.shared
        key, batch_key, critic_key = jax.random.split(shared.key, 3)
        hp = population.hparams
        hp0 = first_member(hp)
        batches = sample_batches(population.experience, batch_key, hp)

        def update(carry):
            critic, agent, critic_steps, critic_loss, q_mean = critics_step(*carry, batches, critic_key, hp)

            def joint_step(args):
                critic, agent = args
                critic_params = agent.critic.critic if own else critic.critic

                def joint_loss(actors):
                    q = jax.vmap(lambda actor, params, batch: jnp.mean(q_values(nets, params, actor, batch.obs)),
                                 in_axes=(0, 0 if own else None, 0))(actors, critic_params, batches)
                    log_det = dvd.diversity(embeddings(actors, batches.obs[0, :options.embedding_states]),
                                            options.bandwidth, options.jitter)
                    return jnp.sum(-q) - shared.lam * log_det, (-q, log_det)

                (_, (losses, log_det)), grads = jax.value_and_grad(joint_loss, has_aux=True)(agent.actor)
                return soft_update(critic, actors_step(agent, grads, hp.lr_actor, hp.tau), hp), (losses, log_det)

            is_policy_step = critic_steps % jnp.maximum(jnp.round(hp0.delay), 1).astype(jnp.int32) == 0
            (critic, agent), (actor_loss, log_det) = jax.lax.cond(
                is_policy_step, joint_step, lambda args: (args, (jnp.full((pop,), jnp.nan), jnp.float32(jnp.nan))),
                (critic, agent))
            metrics = {"critic_loss": critic_loss, "q_mean": q_mean, "actor_loss": actor_loss,
                       "dvd_train_logdet": jnp.full((pop,), log_det)}
            return (critic, agent), metrics

        started = population.env_steps[0] > population.learn_from[0]
        (critic, agent), metrics = skip_or(started, update, (shared.critic, population.agent))
        return population.replace(agent=agent, shared=shared.replace(critic=critic, key=key)), metrics

    def finish(population: Member, train_returns: jax.Array) -> tuple[Member, dict[str, jax.Array]]:
        shared: DvDShared = population.shared
        key, states_key, bandit_key = jax.random.split(shared.key, 3)
        states = union_sample(population.experience, states_key, options.embedding_states).obs
        actions = embeddings(population.agent.actor, states)
        # The reference's bandit feedback: the population's mean training return (members that finished an episode).
        mean = jnp.where(jnp.isfinite(train_returns).any(), jnp.nanmean(train_returns), jnp.nan)
        steps = population.env_steps[0]
        bandit = shared.bandit
        if options.lambda_mode == "bandit":
            bandit = dvd.bandit_step(bandit, mean, steps >= warmup, bandit_key, len(arms))
        scalars = {"dvd_lambda": shared.lam, "dvd_logdet": dvd.diversity(actions, options.bandwidth, options.jitter),
                   "dvd_pairwise_distance": dvd.mean_pairwise_distance(actions), "bandit_arm": bandit.arm}
        scalars.update({f"bandit_mean_{i}": p for i, p in enumerate(dvd.posterior_means(bandit, len(arms)))})
        shared = shared.replace(bandit=bandit, lam=next_lambda(bandit, steps), key=key)
        return (population.replace(shared=shared),
                {name: jnp.full((pop,), value, jnp.float32) for name, value in scalars.items()})

    return DvDSteps(init_shared, learn, finish, sample_batches)
