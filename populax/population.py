"""Population helpers and executors: how the member axis runs.

An executor turns a function written for ONE member into a function over a
stacked population (every leaf has a leading axis of size N), like
``jax.vmap`` does, and all executors give the same numbers:

* ``sequential`` -- a Python loop over a jitted single-member function (the
  baseline every practitioner writes first);
* ``vmap``       -- one compiled program for all members;
* ``chunked:K``  -- one compiled program that vmaps over K members at a time
  inside ``lax.map`` (keeps the working set of a chunk in cache on CPU);
* ``sharded``    -- the member axis split over the local devices with
  ``shard_map``, vmap within each device;
* ``auto``       -- what ``populax train`` uses by default (see ``make_executor``).

Usage: ``population_fn = make_executor("vmap", pop)(member_fn)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from populax.errors import ConfigError

Executor = Callable[[Callable[..., Any]], Callable[..., Any]]

EXECUTORS = ("auto", "sequential", "vmap", "chunked:K", "sharded")


def pop_size(stacked: Any) -> int:
    """Number of members in a stacked pytree (its leading axis)."""
    return int(jax.tree.leaves(stacked)[0].shape[0])


def select_member(stacked: Any, member: int) -> Any:
    """Member ``member`` of a stacked pytree, without the member axis."""
    return jax.tree.map(lambda x: x[member], stacked)


def stack_members(members: list[Any]) -> Any:
    """Stack a list of same-shaped member pytrees on a new leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *members)


def copy_members(stacked: Any, sources: jax.Array) -> Any:
    """Member i becomes a copy of member ``sources[i]`` (an indexed gather)."""
    return jax.tree.map(lambda x: x[sources], stacked)


def vmap_executor(fn: Callable[..., Any]) -> Callable[..., Any]:
    """All members in one compiled vmap."""
    return jax.jit(jax.vmap(fn))


def sequential_executor(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A Python loop over one jitted single-member function."""
    single = jax.jit(fn)

    def run(*stacked):
        n = pop_size(stacked)
        outputs = [single(*select_member(stacked, i)) for i in range(n)]
        return stack_members(outputs)

    return run


def chunked_executor(chunk: int) -> Executor:
    """vmap over ``chunk`` members at a time, the chunks in a compiled ``lax.map``."""

    def executor(fn: Callable[..., Any]) -> Callable[..., Any]:
        return jax.jit(lambda *stacked: jax.lax.map(lambda args: fn(*args), stacked, batch_size=chunk))

    return executor


def sharded_executor(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Split the member axis over all local devices; vmap within each device.

    The population size must be a multiple of the device count (the caller
    checks, so that the error names the setting).
    """
    mesh = Mesh(np.asarray(jax.devices()), ("pop",))
    spec = PartitionSpec("pop")
    # check_vma=False: members never communicate, and one-member code (e.g. a
    # constant returned by one branch of a cond) should not need axis annotations.
    mapped = jax.shard_map(jax.vmap(fn), mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
    return jax.jit(mapped)


def auto_chunk(pop: int) -> int:
    """Chunk size ``auto`` uses: whole-population vmap for small N.

    Measured (docs/benchmarks.md): on XLA:CPU a plain vmap of a whole TD3
    update stays efficient up to a handful of members and then falls behind
    a loop, because the stacked parameters and optimizer moments of many
    members no longer fit in cache; vmapping over chunks of a few members keeps
    the per-member cost flat.
    """
    return min(pop, 4)


def make_executor(name: str, pop: int) -> Executor:
    """The executor called ``name`` for a population of ``pop`` members."""
    if name == "sequential":
        return sequential_executor
    if name == "vmap":
        return vmap_executor
    if name == "auto":
        chunk = auto_chunk(pop)
        return vmap_executor if chunk >= pop else chunked_executor(chunk)
    if name == "sharded":
        devices = jax.local_device_count()
        if pop % devices:
            raise ConfigError(
                f"--executor sharded: --pop {pop} must be a multiple of the "
                f"{devices} local devices"
            )
        return sharded_executor
    if name.startswith("chunked:"):
        size = name.partition(":")[2]
        if not size.isdigit() or int(size) < 1:
            raise ConfigError(f"--executor: chunk size must be a positive whole number, got {name!r}")
        return chunked_executor(int(size))
    raise ConfigError(f"--executor: unknown executor {name!r}; allowed: {', '.join(EXECUTORS)}")
