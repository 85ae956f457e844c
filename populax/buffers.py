"""A replay buffer for one member, as a pytree of fixed-size device arrays.

Pure functions, usable inside ``jit``, ``vmap`` and ``lax.scan``; a population
of buffers is the same pytree with a leading member axis, produced by the
executor like every other per-member state.
"""

from __future__ import annotations

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


def buffer_add(buffer: ReplayBuffer, batch: Transition) -> ReplayBuffer:
    """Append a batch of transitions (leading axis E), overwriting the oldest."""
    capacity = jax.tree.leaves(buffer.data)[0].shape[0]
    count = jax.tree.leaves(batch)[0].shape[0]
    indices = (buffer.position + jnp.arange(count)) % capacity
    data = jax.tree.map(lambda store, new: store.at[indices].set(new), buffer.data, batch)
    return ReplayBuffer(
        data=data,
        position=(buffer.position + count) % capacity,
        size=jnp.minimum(buffer.size + count, capacity),
    )


def buffer_sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> Transition:
    """Draw ``batch_size`` transitions uniformly (with replacement) from the valid part."""
    indices = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    return jax.tree.map(lambda store: store[indices], buffer.data)


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
