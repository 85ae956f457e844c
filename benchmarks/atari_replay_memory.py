"""Bytes per transition of Atari replay: whole transitions vs frame storage (populax/buffers.py).

Sizes come from shapes (``jax.eval_shape``: nothing allocated); with
``--allocate N`` a real N-transition frame buffer of one member is built and
filled by inserting real Pong frames, and the process's resident memory is
printed after each step (is the allocation lazy? what does an insert add?)
and how long an insert of one 50-step block takes (in place,
the buffer donated, as the host learner inserts).

    python benchmarks/atari_replay_memory.py                     # 1M transitions, shapes only
    python benchmarks/atari_replay_memory.py --allocate 200000   # plus a measured allocation
"""

from __future__ import annotations

import argparse
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from populax.buffers import buffer_add, buffer_init, replay_init
from populax.envs.host_envs import make_host_spec, make_vector_env
from populax.loop.offpolicy import example_transition
from populax.memory import format_bytes, tree_bytes


def resident_bytes() -> int:
    """The process's resident set size now (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def pong_rows(steps: int) -> tuple:
    """``steps`` random-action Pong transitions of one env, as the host collector stores them."""
    spec = make_host_spec("ALE/Pong-v5")
    envs = make_vector_env(spec, 1, "sync")
    obs, _ = envs.reset(seed=0)
    rows = []
    rng = np.random.default_rng(0)
    for _ in range(steps):
        action = rng.integers(spec.action.size, size=1)
        next_obs, reward, terminated, truncated, info = envs.step(action)
        rows.append((obs[0], np.int32(action[0]), np.float32(reward[0]), next_obs[0], np.float32(terminated[0])))
        obs = next_obs
    envs.close()
    return tuple(jnp.asarray(np.stack(field)) for field in zip(*rows))


def main() -> None:
    """Print the bytes per transition of both layouts, and optionally a measured allocation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=1_000_000, help="transitions per member (shapes only)")
    parser.add_argument("--allocate", type=int, default=0, help="also build a real frame buffer of this many transitions")
    args = parser.parse_args()
    spec = make_host_spec("ALE/Pong-v5")
    example = example_transition(spec.obs_shape, spec.obs_dtype, spec.action)
    whole = tree_bytes(jax.eval_shape(lambda: buffer_init(example, args.capacity)))
    frames = tree_bytes(jax.eval_shape(lambda: replay_init(example, args.capacity, 1)))
    print(f"| layout | bytes per transition | one member, {args.capacity:,} transitions |")
    print("|---|---|---|")
    print(f"| whole transitions (two 84x84x4 stacks) | {whole / args.capacity:,.0f} | {format_bytes(whole)} |")
    print(f"| frame storage (FrameBuffer) | {frames / args.capacity:,.0f} | {format_bytes(frames)} |")
    print(f"ratio: {whole / frames:.2f}x")
    if args.allocate:
        from populax.agents.base import Transition

        rows = Transition(*pong_rows(50))
        base = resident_bytes()
        buffer = jax.jit(replay_init, static_argnums=(1, 2))(example, args.allocate, 1)
        jax.block_until_ready(buffer)
        size = tree_bytes(buffer)
        print(f"frame buffer of {args.allocate:,} transitions: {format_bytes(size)}; resident after init: "
              f"+{format_bytes(resident_bytes() - base)}")
        add = jax.jit(buffer_add, donate_argnums=0)  # as the host learner inserts: in place
        for insert in range(1, 4):
            start = time.perf_counter()
            buffer = add(buffer, rows)
            jax.block_until_ready(buffer)
            print(f"insert {insert} of 50 rows: resident +{format_bytes(resident_bytes() - base)}, "
                  f"{time.perf_counter() - start:.3f} s")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(f"peak resident of the process: {format_bytes(peak)} ({peak / size:.2f}x the buffer)")


if __name__ == "__main__":
    main()
