"""A replay buffer for one member, as a pytree of fixed-size device arrays.

Pure functions, usable inside ``jit``, ``vmap`` and ``lax.scan``; a population
of buffers is the same pytree with a leading member axis, produced by the
executor like every other per-member state. Two kinds: :class:`ReplayBuffer`
stores whole transitions; :class:`FrameBuffer` (host envs with uint8 image
stacks, i.e. Atari) stores each frame once and rebuilds the stacks when it
samples. ``buffer_add`` and ``buffer_sample`` take either.

N-step returns are made when sampling, not when storing (``n_step_fold``):
a drawn transition is extended with its env's following rows, so the stored
layout, checkpoints and resume do not depend on ``n``, and a PBT member can
change ``gamma`` without stale discounted sums in its buffer.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct

from populax.agents.base import Transition


@struct.dataclass
class ReplayBuffer:
    """Ring buffer of transitions; ``capacity`` is the leading size of each field."""

    data: Transition
    position: jax.Array
    """Index where the next transition is written."""
    size: jax.Array
    """Number of valid transitions (saturates at capacity)."""


def buffer_init(example: Transition, capacity: int) -> ReplayBuffer:
    """An empty buffer shaped like ``example`` (one unbatched transition)."""
    data = jax.tree.map(lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.asarray(x).dtype), example)
    return ReplayBuffer(data=data, position=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))


def replay_init(example: Transition, capacity: int, envs: int) -> ReplayBuffer | FrameBuffer:
    """The replay a host member keeps: frame storage for uint8 image stacks, else whole transitions."""
    if uses_frame_storage(example.obs.shape, example.obs.dtype):
        return frame_buffer_init(example, capacity, envs)
    return buffer_init(example, capacity)


def buffer_add(buffer: ReplayBuffer | FrameBuffer, batch: Transition) -> ReplayBuffer | FrameBuffer:
    """Append a batch of transitions (leading axis E), overwriting the oldest."""
    if isinstance(buffer, FrameBuffer):
        return frame_buffer_add(buffer, batch)
    capacity = jax.tree.leaves(buffer.data)[0].shape[0]
    count = jax.tree.leaves(batch)[0].shape[0]
    indices = (buffer.position + jnp.arange(count)) % capacity
    data = jax.tree.map(lambda store, new: store.at[indices].set(new), buffer.data, batch)
    return ReplayBuffer(
        data=data,
        position=(buffer.position + count) % capacity,
        size=jnp.minimum(buffer.size + count, capacity),
    )


def buffer_sample(buffer: ReplayBuffer | FrameBuffer, key: jax.Array, batch_size: int, n_step: int = 1,
                  gamma: jax.Array | float = 1.0, envs: int = 1) -> Transition:
    """Draw ``batch_size`` transitions uniformly (with replacement) from the valid part.

    ``n_step`` > 1: each one becomes an n-step transition with discount
    ``gamma`` (``n_step_fold``); ``envs`` is the number of rows each add wrote
    (one per env: row t*E + e is env e at step t), so an env's next row is
    ``envs`` further on.
    """
    if isinstance(buffer, FrameBuffer):
        return frame_buffer_sample(buffer, key, batch_size, n_step, gamma)
    indices = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    take = lambda rows: jax.tree.map(lambda store: store[rows], buffer.data)  # noqa: E731
    capacity = jax.tree.leaves(buffer.data)[0].shape[0]
    following = ring_successors(take, indices, buffer.position, buffer.size, capacity, envs)
    return n_step_fold(take(indices), following, n_step, gamma)


def ring_successors(take: Callable[[jax.Array], Transition], indices: jax.Array, position: jax.Array,
                    size: jax.Array, capacity: int, envs: int) -> Callable[[int], tuple[Transition, jax.Array]]:
    """``k -> (rows k adds after indices, whether they are stored yet)`` for a ring written ``envs`` rows per add
    (``position`` and ``size`` may be per index, as when drawing from a union of buffers)."""
    age_order = (indices - (position - size)) % capacity  # 0 = the oldest stored row

    def successor(k: int) -> tuple[Transition, jax.Array]:
        return take((indices + k * envs) % capacity), age_order + k * envs < size

    return successor


def n_step_fold(first: Transition, successor: Callable[[int], tuple[Transition, jax.Array]], n_step: int,
                gamma: jax.Array | float) -> Transition:
    """One-step transitions ``first`` extended to n-step ones with their env's next rows (``successor(k)``).

    reward = r_t + gamma r_{t+1} + ... + gamma^(k-1) r_{t+k-1}, next_obs =
    s_{t+k}, terminated = that of step t+k-1, horizon = k, with k = n_step
    unless the episode ended before (terminated, or truncated: the next row's
    observation is not this one's next observation, it is a reset) or the next
    row is not stored yet. The targets then bootstrap with gamma^k
    (``agents.base.bootstrap_discount``). Like Rainbow's, the sum is over
    the stored actions (no off-policy correction): ``n_step`` 3-5 is usual.
    """
    folded = first._replace(horizon=jnp.ones_like(first.reward))
    going = first.terminated == 0
    for k in range(1, n_step):
        row, stored = successor(k)
        same_episode = jnp.all((row.obs == folded.next_obs).reshape(row.obs.shape[0], -1), axis=1)
        going = going & stored & same_episode
        rows_going = going.reshape((-1,) + (1,) * (row.next_obs.ndim - 1))
        folded = Transition(
            obs=folded.obs, action=folded.action,
            reward=folded.reward + jnp.where(going, gamma ** k * row.reward, 0.0),
            next_obs=jnp.where(rows_going, row.next_obs, folded.next_obs),
            terminated=jnp.where(going, row.terminated, folded.terminated),
            horizon=folded.horizon + going,
        )
        going = going & (row.terminated == 0)
    return folded if n_step > 1 else first


def buffer_rewind(buffer: ReplayBuffer, position: jax.Array, size: jax.Array, written: jax.Array) -> ReplayBuffer:
    """The buffer without the last ``written`` transitions, given its ``position`` and ``size`` before them.

    The transitions from before that the new ones did not overwrite are kept
    and moved to the front (oldest first), so the valid part is again
    ``[0, size)``; every one of the ``written`` transitions is dropped. Used
    on a member whose chunk failed: its transitions were acted by NaN
    parameters, and the buffer as it was before the chunk is not kept (the
    chunk updates the buffers in place).
    """
    capacity = jax.tree.leaves(buffer.data)[0].shape[0]
    kept = jnp.clip(jnp.minimum(size, capacity - written), 0, capacity)
    oldest = (position - kept) % capacity
    data = jax.tree.map(lambda store: jnp.roll(store, -oldest, axis=0), buffer.data)
    return ReplayBuffer(data=data, position=kept % capacity, size=kept.astype(buffer.size.dtype))


def buffer_without_transitions(buffer: ReplayBuffer | FrameBuffer) -> ReplayBuffer | FrameBuffer:
    """The buffer's counters only (its stored transitions and frames set to None): what the driver keeps
    before a chunk to drop that chunk's transitions again (``buffer_rewind_to``)."""
    if isinstance(buffer, FrameBuffer):
        return buffer.replace(frames=None, action=None, reward=None, terminated=None, obs_frame=None, next_frame=None)
    return buffer.replace(data=None)


def buffer_rewind_to(buffer: ReplayBuffer | FrameBuffer, kept: ReplayBuffer | FrameBuffer,
                     written: jax.Array) -> ReplayBuffer | FrameBuffer:
    """The buffer without the ``written`` transitions added since ``kept`` (``buffer_without_transitions``)."""
    if isinstance(buffer, FrameBuffer):
        return frame_buffer_rewind(buffer, kept)
    return buffer_rewind(buffer, kept.position, kept.size, written)


def buffer_size(buffer: ReplayBuffer | FrameBuffer) -> jax.Array:
    """Transitions that can be sampled."""
    if isinstance(buffer, FrameBuffer):
        return jnp.sum(buffer.count - buffer.oldest)
    return buffer.size


# -- Frame storage for stacked image observations ---------------------------------------------------

def uses_frame_storage(obs_shape: tuple[int, ...], obs_dtype: object) -> bool:
    """Whether a host env's observations go to a :class:`FrameBuffer`: uint8 images ``[H, W, K]`` (Atari's
    84x84x4 stacks), whose K frames are each stored once instead of twice per transition and once per stack."""
    return len(obs_shape) == 3 and jnp.dtype(obs_dtype) == jnp.uint8


@struct.dataclass
class FrameBuffer:
    """Replay of image observations ``[H, W, K]`` (K stacked frames, newest last) that stores each frame once.

    One ring per env (``E`` of them): ``frames`` holds frames in the order
    they appeared, and each transition slot holds the absolute frame index
    of the newest frame of its observation (``obs_frame``) and of its next
    observation (``next_frame``); the K frames ending there are the stack.
    An observation that continues the previous row's next observation costs
    no frame, a next observation that shifts its observation by one frame
    (a frame stack's step) costs one; anything else (an episode's first
    observation, whatever the padding; a final observation that does not
    shift) costs all K. So a stack is rebuilt bitwise equal to what the env
    returned, across resets, truncations and resumes, with ~1 frame per
    transition. Atari 84x84: ~7.3 kB per transition instead of 56 kB.
    """

    frames: jax.Array
    """uint8 [E, F, H, W]: each env's frame ring (F = frame_slots(C, K))."""
    action: jax.Array
    """[E, C, ...] per transition slot (C = capacity / E); likewise reward and terminated."""
    reward: jax.Array
    terminated: jax.Array
    obs_frame: jax.Array
    """int32 [E, C]: absolute index (frames ever written by the env) of the observation's newest frame."""
    next_frame: jax.Array
    """int32 [E, C]: absolute index of the next observation's newest frame."""
    count: jax.Array
    """int32 [E]: transitions ever written per env."""
    written: jax.Array
    """int32 [E]: frames ever written per env."""
    oldest: jax.Array
    """int32 [E]: absolute index of the oldest transition whose frames are all still in the ring."""
    stack: int = struct.field(pytree_node=False)
    """K, frames per observation (static: it shapes every sample)."""


def frame_slots(slots: int, stack: int) -> int:
    """Frames per env ring for ``slots`` transitions: one each, plus ~3% for episode starts (K frames each)."""
    return slots + slots // 32 + 2 * stack


def frame_buffer_init(example: Transition, capacity: int, envs: int) -> FrameBuffer:
    """An empty frame buffer for ``capacity`` transitions from ``envs`` envs (``example``: one unbatched transition)."""
    height, width, stack = example.obs.shape
    slots = -(-capacity // envs)

    def per_slot(x):
        return jnp.zeros((envs, slots, *jnp.shape(x)), jnp.asarray(x).dtype)

    counters = jnp.zeros((envs,), jnp.int32)
    return FrameBuffer(
        frames=jnp.zeros((envs, frame_slots(slots, stack), height, width), jnp.uint8),
        action=per_slot(example.action), reward=per_slot(example.reward), terminated=per_slot(example.terminated),
        obs_frame=jnp.zeros((envs, slots), jnp.int32), next_frame=jnp.zeros((envs, slots), jnp.int32),
        count=counters, written=counters, oldest=counters, stack=stack,
    )


def _frame_indices(newest: jax.Array, stack: int, frames_per_ring: int) -> jax.Array:
    """Ring positions [..., K] of the ``stack`` frames ending at absolute frame index ``newest``, oldest first."""
    return (newest[..., None] - stack + 1 + jnp.arange(stack)) % frames_per_ring


def _env_add(ring: FrameBuffer, rows: Transition) -> FrameBuffer:
    """Append one env's rows (leading axis B, in time order) to its rings (no env axis here)."""
    frames_per_ring, slots = ring.frames.shape[0], ring.obs_frame.shape[0]
    stack = ring.stack
    rows_n = rows.reward.shape[0]
    last_next = jnp.moveaxis(ring.frames[_frame_indices(ring.written - 1, stack, frames_per_ring)], 0, -1)
    previous_next = jnp.concatenate([last_next[None], rows.next_obs[:-1]])
    has_previous = (jnp.arange(rows_n) > 0) | (ring.count > 0)
    continues = has_previous & jnp.all(rows.obs == previous_next, axis=(1, 2, 3))
    shifts = jnp.all(rows.next_obs[..., :-1] == rows.obs[..., 1:], axis=(1, 2, 3))
    obs_cost = jnp.where(continues, 0, stack)
    next_cost = jnp.where(shifts, 1, stack)
    start = ring.written + jnp.cumsum(obs_cost + next_cost) - obs_cost - next_cost
    obs_frame = start + obs_cost - 1
    next_frame = obs_frame + next_cost
    written = ring.written + jnp.sum(obs_cost + next_cost)

    # Candidate writes per row: the observation's K frames, then the next observation's K frames.
    k = jnp.arange(stack)
    obs_at = jnp.where(continues[:, None], -1, start[:, None] + k)
    next_at = jnp.where(shifts[:, None], jnp.where(k == stack - 1, obs_frame[:, None] + 1, -1),
                        obs_frame[:, None] + 1 + k)
    at = jnp.concatenate([obs_at, next_at], axis=1)
    # Skipped writes and frames this same call overwrites again go nowhere (an index past the ring).
    at = jnp.where((at >= 0) & (at >= written - frames_per_ring), at % frames_per_ring, frames_per_ring)
    values = jnp.concatenate([jnp.moveaxis(rows.obs, -1, 1), jnp.moveaxis(rows.next_obs, -1, 1)], axis=1)
    frames = ring.frames.at[at.reshape(-1)].set(values.reshape(-1, *values.shape[2:]), mode="drop")

    absolute = ring.count + jnp.arange(rows_n)
    count = ring.count + rows_n
    slot = jnp.where(absolute >= count - slots, absolute % slots, slots)

    def put(store, new):
        return store.at[slot].set(new, mode="drop")

    ring = ring.replace(frames=frames, action=put(ring.action, rows.action), reward=put(ring.reward, rows.reward),
                        terminated=put(ring.terminated, rows.terminated), obs_frame=put(ring.obs_frame, obs_frame),
                        next_frame=put(ring.next_frame, next_frame), count=count, written=written)
    return ring.replace(oldest=_oldest_complete(ring))


def _oldest_complete(ring: FrameBuffer) -> jax.Array:
    """Absolute index of the oldest transition in one env's ring whose frames were not overwritten.

    Frame indices grow with the transition index, so the complete transitions
    are the newest ones: a bisection over the slots finds where they start.
    """
    slots, frames_per_ring = ring.obs_frame.shape[0], ring.frames.shape[0]
    first_kept = ring.written - frames_per_ring

    def complete(index):
        return ring.obs_frame[index % slots] - ring.stack + 1 >= first_kept

    def halve(_, bounds):  # the answer stays in [low, high]; high = count: none is complete
        low, high = bounds
        middle = (low + high) // 2
        left = complete(middle) | (low == high)
        return jnp.where(left, low, middle + 1), jnp.where(left, middle, high)

    low = jnp.maximum(0, ring.count - slots)
    return jax.lax.fori_loop(0, 32, halve, (low, ring.count))[0]


def frame_buffer_add(buffer: FrameBuffer, batch: Transition) -> FrameBuffer:
    """Append a block of transitions whose rows are iteration-major (row ``t * E + e`` is env e at step t)."""
    envs = buffer.count.shape[0]

    def per_env(x):  # [B*E, ...] -> [E, B, ...]
        return jnp.swapaxes(x.reshape(-1, envs, *x.shape[1:]), 0, 1)

    return jax.vmap(_env_add)(buffer, jax.tree.map(per_env, batch))


def frame_buffer_take(buffer: FrameBuffer, env: jax.Array, index: jax.Array) -> Transition:
    """The transitions with absolute indices ``index`` of envs ``env`` (both [batch]), stacks rebuilt from the frames."""
    slot = index % buffer.obs_frame.shape[1]

    def stack_of(newest):  # [batch] frame indices -> [batch, H, W, K]
        return jnp.moveaxis(buffer.frames[env[:, None], _frame_indices(newest, buffer.stack, buffer.frames.shape[1])],
                            1, -1)

    return Transition(
        obs=stack_of(buffer.obs_frame[env, slot]), action=buffer.action[env, slot], reward=buffer.reward[env, slot],
        next_obs=stack_of(buffer.next_frame[env, slot]), terminated=buffer.terminated[env, slot],
    )


def frame_buffer_sample(buffer: FrameBuffer, key: jax.Array, batch_size: int, n_step: int = 1,
                        gamma: jax.Array | float = 1.0) -> Transition:
    """Draw ``batch_size`` complete transitions uniformly (with replacement) over all envs' rings (``n_step``:
    as ``buffer_sample``; an env's next transition is the next index of its ring)."""
    sizes = buffer.count - buffer.oldest
    ends = jnp.cumsum(sizes)
    draw = jax.random.randint(key, (batch_size,), 0, jnp.maximum(ends[-1], 1))
    env = jnp.minimum(jnp.searchsorted(ends, draw, side="right"), sizes.shape[0] - 1)
    index = buffer.oldest[env] + draw - (ends[env] - sizes[env])

    def successor(k: int) -> tuple[Transition, jax.Array]:
        return frame_buffer_take(buffer, env, index + k), index + k < buffer.count[env]

    return n_step_fold(frame_buffer_take(buffer, env, index), successor, n_step, gamma)


def frame_buffer_rewind(buffer: FrameBuffer, kept: FrameBuffer) -> FrameBuffer:
    """``buffer`` without the transitions written since ``kept`` (its counters before them).

    The slots go back to ``kept.count``; the frames stay where they are (the
    next rows may continue the last stack: an env that goes on after the
    rollback). Older transitions whose slots the dropped ones overwrote are
    marked incomplete, so sampling and the bisection skip them.
    """
    return jax.vmap(_env_rewind)(buffer, kept.count)


def _env_rewind(ring: FrameBuffer, count: jax.Array) -> FrameBuffer:
    slots = ring.obs_frame.shape[0]
    absolute = count - slots + (jnp.arange(slots) - (count - slots)) % slots  # each slot's index at ``count``
    overwritten = absolute < ring.count - slots
    ring = ring.replace(obs_frame=jnp.where(overwritten, jnp.iinfo(jnp.int32).min // 2, ring.obs_frame), count=count)
    return ring.replace(oldest=_oldest_complete(ring))
