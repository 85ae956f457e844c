"""Your own ON-POLICY algorithm: A2C (Mnih et al. 2016, synchronous), which populax does not ship, written for ONE
member and trained as a population with PBT on a compiled (gymnax) and a host (Gymnasium) CartPole.

An on-policy algorithm is a `populax.Algorithm(on_policy=True)` whose builder returns an `OnPolicyAgent`:

    init(key, hparams) -> state
    act(state, obs, key) -> (action, log_prob, value)     sampling, batched over the member's envs
    value(state, obs) -> value                            V(obs), for the truncation bootstrap and GAE's last step
    policy(state, obs) -> action                          deterministic, for evaluation
    update(state, rollout, advantages, returns, key, hparams) -> (state, metrics)

populax's member loop (`populax/loop/onpolicy.py`) collects `rollout_len` env iterations of the member's envs
into a `Rollout` (each field `[T, E, ...]`: obs, action, log_prob, value, reward, done), adds gamma * V(final obs)
to the reward where an episode was truncated (a time limit is not a terminal state), computes the GAE advantages
and returns with the member's own `gamma` and `gae_lambda` (traced: PBT changes them without recompiling), and
calls `update` once per rollout. So n-step A2C is GAE with lambda 1, and `update` is only the loss.

    python examples/custom_onpolicy_algorithm.py          # register it, train it: 4 members, PBT, both envs
    PYTHONPATH=examples populax train --algo py:custom_onpolicy_algorithm:A2C --env CartPole-v1 --strategy pbt
"""

import argparse
import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from populax import AgentSpec, Algorithm, TrainConfig, register_algorithm, train
from populax.agents.base import OnPolicyAgent, Rollout, adam_step
from populax.hparams import hparam


@struct.dataclass
class A2CHParams:
    """What may differ per member (traced). The loop reads ``gamma`` and ``gae_lambda``."""

    lr: jax.Array = hparam(7e-4, "Adam learning rate.", valid=(0, 1), search=(1e-5, 3e-3), log=True)
    ent_coef: jax.Array = hparam(0.01, "Weight of the entropy bonus.", valid=(0, 10), search=(0.0, 0.05))
    vf_coef: jax.Array = hparam(0.5, "Weight of the value loss.", valid=(0, 100), search=(0.25, 1.0))
    gamma: jax.Array = hparam(0.99, "Discount factor.", valid=(0, 1), search=(0.9, 0.999))
    gae_lambda: jax.Array = hparam(1.0, "GAE lambda (1: the n-step return over the rollout, as A2C).",
                                   valid=(0, 1), search=(0.8, 1.0))


@dataclass(frozen=True)
class A2COptions:
    """Static settings (``--algo-opt.NAME``): one value for the whole population, part of the compiled program.
    Their annotations are ``int``, ``float``, ``bool`` or ``str``."""

    rollout_len: int = 8
    """Env iterations per rollout (the n of the n-step return); the on-policy loop requires this option."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip of each update."""


@struct.dataclass
class A2CState:
    params: dict
    opt: optax.OptState
    updates: jax.Array
    """Updates made: populax reports it (summary.json's updates_per_s) when a state has this field."""


class ActorCritic(nn.Module):
    """Separate policy and value MLPs (tanh, orthogonal init) over the flattened observation."""

    hidden: tuple
    n_actions: int

    @nn.compact
    def __call__(self, obs):
        x = obs.reshape((obs.shape[0], -1))

        def mlp(x, out, scale):
            for width in self.hidden:
                x = jnp.tanh(nn.Dense(width, kernel_init=nn.initializers.orthogonal(math.sqrt(2)))(x))
            return nn.Dense(out, kernel_init=nn.initializers.orthogonal(scale))(x)

        return mlp(x, self.n_actions, 0.01), mlp(x, 1, 1.0)[..., 0]


def make_a2c(spec: AgentSpec) -> OnPolicyAgent:
    """One A2C member for the environment's shapes (``spec``: observation shape, action count, hidden widths,
    the resolved options)."""
    options = spec.options or A2COptions()
    net = ActorCritic(tuple(spec.hidden), spec.action.size)
    optimizer = optax.chain(optax.clip_by_global_norm(options.max_grad_norm), optax.scale_by_adam())

    def init(key, hp: A2CHParams) -> A2CState:
        params = net.init(key, jnp.zeros((1, *spec.obs_shape)))
        return A2CState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def act(state: A2CState, obs, key):
        logits, value = net.apply(state.params, obs)
        action = jax.random.categorical(key, logits)
        log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[..., None], axis=-1)[..., 0]
        return action, log_prob, value

    def value(state: A2CState, obs):
        return net.apply(state.params, obs)[1]

    def policy(state: A2CState, obs):
        return jnp.argmax(net.apply(state.params, obs)[0], axis=-1)

    def update(state: A2CState, rollout: Rollout, advantages, returns, key, hp: A2CHParams):
        # One gradient step on the whole rollout: [T, E] flattened to a batch of T * E.
        obs = rollout.obs.reshape((-1, *rollout.obs.shape[2:]))
        action = rollout.action.reshape(-1)
        advantages, returns = advantages.reshape(-1), returns.reshape(-1)

        def loss(params):
            logits, v = net.apply(params, obs)
            log_probs = jax.nn.log_softmax(logits)
            log_prob = jnp.take_along_axis(log_probs, action[:, None], axis=-1)[:, 0]
            entropy = -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1).mean()
            policy_loss = -jnp.mean(log_prob * advantages)  # the advantages are data: no gradient flows into them
            value_loss = 0.5 * jnp.mean((v - returns) ** 2)
            total = policy_loss + hp.vf_coef * value_loss - hp.ent_coef * entropy
            return total, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}

        grads, metrics = jax.grad(loss, has_aux=True)(state.params)
        params, opt = adam_step(state.params, grads, state.opt, hp.lr, optimizer)
        return A2CState(params, opt, state.updates + 1), metrics

    return OnPolicyAgent(init=init, act=act, value=value, policy=policy, update=update)


A2C = Algorithm("a2c", A2CHParams, make_a2c, continuous=False, discrete=True, options=A2COptions, on_policy=True,
                optimizer_fields=("opt",))
"""--algo py:custom_onpolicy_algorithm:A2C finds it in any process; register_algorithm(A2C) makes --algo a2c work."""


def main() -> None:
    """Register A2C and train a PBT population of it on gymnax CartPole-v1 and on Gymnasium's CartPole-v1."""
    parser = argparse.ArgumentParser(description="A2C, a custom on-policy algorithm, with PBT on both kinds of env")
    parser.add_argument("--steps", type=int, default=40_000, help="env steps per member")
    parser.add_argument("--pop", type=int, default=4)
    parser.add_argument("--out", default="runs/example-custom-onpolicy")
    args = parser.parse_args()
    register_algorithm(A2C)
    for env in ("CartPole-v1", "gymnasium:CartPole-v1"):
        config = TrainConfig(env=env, algo="a2c", pop=args.pop, total_steps=args.steps, eval_every=args.steps // 4,
                             envs_per_member=4, algo_options={"rollout-len": 8}, hidden=(64, 64), strategy="pbt",
                             pbt_bottom=0.5, pbt_top=0.5, hp={"lr": "loguniform:3e-4,3e-3"},
                             out=f"{args.out}/{env.replace(':', '_')}", force=True, progress=False, tensorboard=False)
        result = train(config)
        print(f"a2c on {env} ({result.summary['backend']}): final returns "
              f"{[round(float(r)) for r in result.returns]}, {result.summary['lineage_events'].get('exploit', 0)} exploits, "
              f"{result.summary['updates_per_member']} updates per member")


if __name__ == "__main__":
    main()
