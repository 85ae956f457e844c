"""Your own algorithm: DDPG (Lillicrap et al. 2016), which populax does not ship, written for ONE member and
trained as a population with PBT on a compiled (gymnax) and a host (Gymnasium) environment.

An algorithm is a `populax.Algorithm`: a builder of one member's agent (`init`, `act`, `policy`, `update`:
pure functions over a state pytree), the `struct.dataclass` of its traced per-member hyperparameters (each field
made with `populax.hparams.hparam`: default, doc, valid range, search range; PBT and sweeps explore them, a new
value never recompiles), and which state fields are its policy (`--pbt-copy policy`). The population, the replay
buffers, the executors, checkpoints and reports are populax's.

    python examples/custom_algorithm.py                       # register it, train it: 4 members, PBT, both envs
    PYTHONPATH=examples populax train --algo py:custom_algorithm:DDPG --env Pendulum-v1 --strategy pbt --pop 8
"""

import argparse

import jax
import jax.numpy as jnp
import optax
from flax import struct

from populax import AgentSpec, Algorithm, TrainConfig, register_algorithm, train
from populax.agents.base import Agent, adam_step, bootstrap_discount, polyak
from populax.agents.nets import MLP, DeterministicActor
from populax.hparams import hparam


@struct.dataclass
class DDPGHParams:
    """What may differ per member (traced)."""

    lr_actor: jax.Array = hparam(1e-3, "Actor Adam learning rate.", valid=(0, 1), search=(1e-5, 1e-2), log=True)
    lr_critic: jax.Array = hparam(1e-3, "Critic Adam learning rate.", valid=(0, 1), search=(1e-5, 1e-2), log=True)
    gamma: jax.Array = hparam(0.99, "Discount factor.", valid=(0, 1), search=(0.9, 0.999))
    tau: jax.Array = hparam(0.005, "Polyak rate of the target networks.", valid=(0, 1), search=(1e-3, 0.1), log=True)
    sigma: jax.Array = hparam(0.1, "Std of the Gaussian exploration noise.", valid=(0, 10), search=(0.0, 0.5))


@struct.dataclass
class DDPGState:
    actor: dict
    critic: dict
    actor_target: dict
    critic_target: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState


OPTIMIZER = optax.scale_by_adam()  # the learning rate is a traced hyperparameter: adam_step scales by it


def make_ddpg(spec: AgentSpec) -> Agent:
    """One DDPG member for the environment's shapes (``spec``: observation shape, action size, hidden widths)."""
    actor_net = DeterministicActor(spec.hidden, spec.action.size)
    critic_net = MLP(spec.hidden, 1)
    obs0, act0 = jnp.zeros((1, *spec.obs_shape)), jnp.zeros((1, spec.action.size))

    def q(critic, obs, action):
        return critic_net.apply(critic, jnp.concatenate([obs, action], axis=-1))[..., 0]

    def init(key, hp: DDPGHParams) -> DDPGState:
        actor_key, critic_key = jax.random.split(key)
        actor, critic = actor_net.init(actor_key, obs0), critic_net.init(critic_key, jnp.concatenate([obs0, act0], -1))
        return DDPGState(actor, critic, actor, critic, OPTIMIZER.init(actor), OPTIMIZER.init(critic))

    def policy(state: DDPGState, obs):
        return actor_net.apply(state.actor, obs)

    def act(state: DDPGState, obs, key, hp: DDPGHParams):
        action = policy(state, obs)
        return jnp.clip(action + hp.sigma * jax.random.normal(key, action.shape), -1.0, 1.0)

    def update(state: DDPGState, batch, key, hp: DDPGHParams):
        # 1. Critic: regress Q(s, a) on r + gamma (1 - terminated) Q'(s', mu'(s')) (truncation bootstraps).
        next_q = q(state.critic_target, batch.next_obs, actor_net.apply(state.actor_target, batch.next_obs))
        target = jax.lax.stop_gradient(batch.reward + bootstrap_discount(batch, hp.gamma) * next_q)

        def critic_loss(critic):
            return jnp.mean((q(critic, batch.obs, batch.action) - target) ** 2)

        c_loss, grads = jax.value_and_grad(critic_loss)(state.critic)
        critic, critic_opt = adam_step(state.critic, grads, state.critic_opt, hp.lr_critic, OPTIMIZER)

        # 2. Actor: ascend Q(s, mu(s)) through the updated critic.
        def actor_loss(actor):
            return -jnp.mean(q(critic, batch.obs, actor_net.apply(actor, batch.obs)))

        a_loss, grads = jax.value_and_grad(actor_loss)(state.actor)
        actor, actor_opt = adam_step(state.actor, grads, state.actor_opt, hp.lr_actor, OPTIMIZER)

        # 3. Targets follow slowly.
        state = DDPGState(actor, critic, polyak(state.actor_target, actor, hp.tau),
                          polyak(state.critic_target, critic, hp.tau), actor_opt, critic_opt)
        return state, {"critic_loss": c_loss, "actor_loss": a_loss, "q_mean": jnp.mean(target)}

    return Agent(init=init, act=act, policy=policy, update=update)


DDPG = Algorithm("ddpg", DDPGHParams, make_ddpg, continuous=True, discrete=False,
                 policy_fields=("actor", "actor_target", "actor_opt"), optimizer_fields=("actor_opt", "critic_opt"))
"""--algo py:custom_algorithm:DDPG finds it in any process; register_algorithm(DDPG) makes --algo ddpg work here."""


def main() -> None:
    """Register DDPG and train a PBT population of it on gymnax Pendulum-v1 and on Gymnasium's Pendulum-v1."""
    parser = argparse.ArgumentParser(description="DDPG, a custom algorithm, with PBT on both kinds of environment")
    parser.add_argument("--steps", type=int, default=10_000, help="env steps per member")
    parser.add_argument("--pop", type=int, default=4)
    parser.add_argument("--out", default="runs/example-custom-algorithm")
    args = parser.parse_args()
    register_algorithm(DDPG)
    for env in ("Pendulum-v1", "gymnasium:Pendulum-v1"):
        config = TrainConfig(env=env, algo="ddpg", pop=args.pop, total_steps=args.steps, eval_every=args.steps // 4,
                             checkpoint_every=args.steps // 4, hidden=(64, 64), strategy="pbt", pbt_bottom=0.5,
                             pbt_top=0.5, hp={"lr-actor": "loguniform:1e-4,3e-3"},
                             # a host run without overlap is reproducible (a host-only setting: not given for gymnax)
                             **({"overlap": False} if env.startswith("gymnasium:") else {}),
                             out=f"{args.out}/{env.replace(':', '_')}", force=True, progress=False, tensorboard=False)
        result = train(config)
        print(f"ddpg on {env} ({result.summary['backend']}): final returns "
              f"{[round(float(r)) for r in result.returns]}, {result.summary['lineage_events'].get('exploit', 0)} exploits")


if __name__ == "__main__":
    main()
