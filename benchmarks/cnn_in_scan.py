"""What a CNN update costs inside the training chunk's loop vs jitted alone, on the same machine, in one run (issue 15).

    python benchmarks/cnn_in_scan.py [--iters 10] [--rounds 3]

For the Nature-CNN DQN update (84x84x4 frames, batch 32, 512 units) and the
MinAtar-CNN DQN update (10x10x4, batch 32, 128 units) of ONE member, prints
milliseconds per update:

* ``alone``: one jitted update per call (the reference);
* ``scan``: ``iters`` updates inside one ``lax.scan`` (the training chunk's shape);
* ``scan-unroll``: the same scan fully unrolled (no loop left in the program);
* ``fori``: ``lax.fori_loop`` (a while loop, like scan without stacking outputs);

and the ratio of each to ``alone`` (the issue's target: <= 1.5x).
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np

from populax.agents import AgentSpec, get_algorithm, nets
from populax.agents.base import ActionSpec, Transition
from populax.agents.options import resolve_options

CASES = {
    "nature_cnn": ((84, 84, 4), (512,), 6),
    "minatar_cnn": ((10, 10, 4), (128,), 3),
    "mlp": ((400,), (128,), 3),  # MinAtar's frames flattened: same dense work, no convolution
}


def make_update(torso: str, batch_size: int):
    """(state, batch, key, hparams, update) of one DQN member with ``torso``."""
    obs_shape, hidden, actions = CASES[torso]
    algorithm = get_algorithm("dqn")
    options = resolve_options(algorithm.options, {"torso": torso}, "dqn")
    agent = algorithm.make(AgentSpec(obs_shape, ActionSpec(True, actions), hidden, options, steps_per_update=4.0))
    hparams = algorithm.hparams()
    key = jax.random.key(0)
    state = agent.init(key, hparams)
    rng = np.random.default_rng(0)
    frames = lambda: jnp.asarray(rng.integers(0, 255, (batch_size, *obs_shape)), jnp.float32)  # noqa: E731
    batch = Transition(frames(), jnp.asarray(rng.integers(0, actions, batch_size), jnp.int32),
                       jnp.ones(batch_size), frames(), jnp.zeros(batch_size))
    return state, batch, key, hparams, agent.update


def programs(update, iters: int) -> dict:
    """The ways of running ``iters`` updates that are timed."""

    def one(state, batch, key, hp):
        return update(state, batch, key, hp)[0]

    def scanned(unroll):
        def run(state, batch, key, hp):
            return jax.lax.scan(lambda s, _: (one(s, batch, key, hp), None), state, length=iters, unroll=unroll)[0]
        return jax.jit(run)

    def fori(state, batch, key, hp):
        return jax.lax.fori_loop(0, iters, lambda _, s: one(s, batch, key, hp), state)

    return {"alone": (jax.jit(one), 1), "scan": (scanned(1), iters), "scan-unroll": (scanned(iters), iters),
            "fori": (jax.jit(fori), iters)}


def time_program(fn, per_call: int, args, calls: int) -> float:
    """Milliseconds per update: best of ``calls`` timed calls (after one compiling call)."""
    state = jax.block_until_ready(fn(*args))
    best = np.inf
    for _ in range(calls):
        start = time.perf_counter()
        state = jax.block_until_ready(fn(state, *args[1:]))
        best = min(best, (time.perf_counter() - start) / per_call)
    return best * 1e3


def main() -> None:
    """Print one table row per torso and way of running."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10, help="updates per scanned call")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (interleaved; best kept)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--torsos", default="nature_cnn,minatar_cnn")
    parser.add_argument("--conv", default="canonical", choices=("canonical", "xla"),
                        help="canonical: populax's convolution with explicit canonical gradients; xla: flax's nn.Conv "
                        "(jax's own transposed convolutions, the state before issue 15)")
    args = parser.parse_args()
    if args.conv == "xla":
        nets.Conv = functools.partial(flax.linen.Conv, padding="VALID")
    print(f"jax {jax.__version__}, devices {jax.devices()}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
          f"conv={args.conv}")
    print("| torso | program | ms / update | x alone |")
    print("| --- | --- | ---: | ---: |")
    for torso in args.torsos.split(","):
        state, batch, key, hparams, update = make_update(torso, args.batch_size)
        runs = programs(update, args.iters)
        best = {name: np.inf for name in runs}
        for _ in range(args.rounds):  # interleaved, so machine load hits every program alike
            for name, (fn, per_call) in runs.items():
                calls = max(1, args.iters // per_call)
                best[name] = min(best[name], time_program(fn, per_call, (state, batch, key, hparams), calls))
        for name, ms in best.items():
            print(f"| {torso} | {name} | {ms:.2f} | {ms / best['alone']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
