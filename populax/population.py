"""Population helpers and executors: how the member axis runs.

An executor turns a function written for ONE member into a function over a
stacked population (every leaf has a leading axis of size N), like
``jax.vmap`` does, and all executors give the same numbers:

* ``sequential`` -- a Python loop over a jitted single-member function (the
  baseline every practitioner writes first);
* ``vmap``       -- one compiled program for all members;
* ``chunked:K``  -- one compiled program that vmaps over K members at a time
  inside ``lax.map`` (keeps the working set of a chunk in cache on CPU);
  ``chunked:1`` is a compiled loop: each member runs unbatched, one after
  the other, inside one program (no Python dispatch per member);
* ``sharded``    -- the member axis split over the local devices with
  ``shard_map``, vmap within each device;
* ``auto``       -- what ``populax train`` uses by default: the members split
  over all local devices when they divide evenly, then one vmap or a compiled
  loop per device (see ``auto_plan``).

Usage: ``population_fn = make_executor("vmap", pop)(member_fn)``;
``make_executor(...)(member_fn, donate=True)`` donates the first argument's
buffers to the program (it updates them in place; the caller must not use
that argument afterwards).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, Sharding, SingleDeviceSharding

from populax.errors import ConfigError
from populax.memory import program_budget_bytes, program_bytes

Executor = Callable[[Callable[..., Any]], Callable[..., Any]]

EXECUTORS = ("auto", "sequential", "vmap", "chunked:K", "sharded")
"""How one machine runs the population axis (``make_executor``)."""
EXECUTOR_CHOICES = (*EXECUTORS, "ray")
"""What ``--executor`` accepts: the executors, and ``ray``, which is a placement rather than an executor
(``runtime.setup.make_backend`` sends it to ``backends.cluster``, whose workers each run ``auto``)."""


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


def donated(donate: bool) -> tuple[int, ...]:
    """``donate_argnums`` of an executor's program: the first argument (the population) or nothing."""
    return (0,) if donate else ()


@contextmanager
def quiet_donation() -> Iterator[None]:
    """Silence JAX's "Some donated buffers were not usable" for the calls inside.

    A donated buffer XLA cannot reuse (no output of its shape and type, or a
    platform that does not alias it) is simply freed later: nothing a user
    can act on, and it would be printed at every compilation.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
        yield


def vmap_executor(fn: Callable[..., Any], donate: bool = False) -> Callable[..., Any]:
    """All members in one compiled vmap."""
    return jax.jit(jax.vmap(fn), donate_argnums=donated(donate))


def sequential_executor(fn: Callable[..., Any], donate: bool = False) -> Callable[..., Any]:
    """A Python loop over one jitted single-member function (``donate``: each member's slice is donated;
    the stacked input itself is only dropped by the caller)."""
    single = jax.jit(fn, donate_argnums=donated(donate))

    def run(*stacked):
        n = pop_size(stacked)
        outputs = [single(*select_member(stacked, i)) for i in range(n)]
        return stack_members(outputs)

    return run


def map_members(fn: Callable[..., Any], chunk: int, pop: int) -> Callable[..., Any]:
    """``fn`` over a stacked population of ``pop``, ``chunk`` members at a time (not jitted).

    One member is called directly: no loop and no vmap (XLA:CPU runs
    convolutions inside a loop ~9x slower, docs/benchmarks.md). ``chunk == 1``
    maps the *unbatched* member function (``lax.map`` without ``batch_size``),
    so a member's ``lax.cond`` stays a real branch and its matmuls stay plain
    GEMMs; a size-1 vmap would batch both. ``chunk >= pop`` is one vmap.
    Otherwise chunks of ``chunk`` members are vmapped inside a compiled
    ``lax.map``.
    """
    if pop == 1:
        return lambda *stacked: jax.tree.map(lambda x: x[None], fn(*select_member(stacked, 0)))
    if chunk == 1:
        return lambda *stacked: jax.lax.map(lambda args: fn(*args), stacked)
    if chunk >= pop:
        return jax.vmap(fn)
    return lambda *stacked: jax.lax.map(lambda args: fn(*args), stacked, batch_size=chunk)


def chunked_executor(chunk: int) -> Executor:
    """vmap over ``chunk`` members at a time, the chunks in a compiled ``lax.map`` (see ``map_members``)."""

    def executor(fn: Callable[..., Any], donate: bool = False) -> Callable[..., Any]:
        return jax.jit(lambda *stacked: map_members(fn, chunk, pop_size(stacked))(*stacked),
                       donate_argnums=donated(donate))

    return executor


def members_mesh() -> Mesh:
    """The member axis (``pop``) over all local devices: where a sharded population lives."""
    return Mesh(np.asarray(jax.devices()), ("pop",))


def shard_members(mapped: Callable[..., Any], donate: bool = False) -> Callable[..., Any]:
    """Split the member axis over all local devices; ``mapped`` runs each device's share.

    ``mapped`` is a function over a stacked population (e.g. ``jax.vmap(fn)``).
    check_vma=False: members never communicate, and one-member code (e.g. a
    constant returned by one branch of a cond) should not need axis annotations.
    """
    spec = PartitionSpec("pop")
    return jax.jit(jax.shard_map(mapped, mesh=members_mesh(), in_specs=spec, out_specs=spec, check_vma=False),
                   donate_argnums=donated(donate))


def sharded_executor(fn: Callable[..., Any], donate: bool = False) -> Callable[..., Any]:
    """Split the member axis over all local devices; vmap within each device.

    The population size must be a multiple of the device count (the caller
    checks, so that the error names the setting).
    """
    return shard_members(jax.vmap(fn), donate)


def init_members(init: Callable[..., Any], shards: int = 1) -> Callable[..., Any]:
    """A member ``init(key, hparams)`` over stacked keys and hyperparameters, as a compiled loop; with ``shards``
    > 1 (the devices the run's executor splits the members over, ``executor_shards``), each device runs the loop
    over its own members and holds only their state (replay buffers included): the first chunk then finds the
    population where it runs, and no device ever holds all of it.

    Never vmapped, whatever the executor: orthogonal initialisation (PPO's)
    runs a LAPACK QR, and jaxlib's batched QR kernel waits inside XLA:CPU's
    thread pool for work it queued on that same pool. When two of them run at
    once (two layers, or two devices) on a 2-thread pool, both wait forever
    (observed: the suite hanging in the PPO test). Unbatched QRs do not
    nest, and an initialisation runs once, so the loop costs nothing.
    """
    def members(keys: jax.Array, hparams: Any) -> Any:
        return jax.lax.map(lambda args: init(*args), (keys, hparams))

    return shard_members(members) if shards > 1 else jax.jit(members)


LOOP_MIN_WEIGHT = 128 * 128
"""On CPU, members whose largest weight (flax ``kernel``) has at least this many entries
run as a compiled loop; smaller networks run as one vmap (measured crossover,
docs/benchmarks.md)."""


def member_kernels(stacked: Any) -> list[tuple[int, ...]]:
    """Shapes (without the member axis) of every leaf named ``kernel``, as flax names weights.

    Only kernels count: replay buffers are large too, but they are not matmul operands."""
    return [
        tuple(leaf.shape[1:])
        for path, leaf in jax.tree_util.tree_flatten_with_path(stacked)[0]
        if path and getattr(path[-1], "key", None) == "kernel"
    ]


def largest_weight(stacked: Any) -> int:
    """Entries of one member's largest weight."""
    return max((int(np.prod(shape)) for shape in member_kernels(stacked)), default=0)


def has_convolutions(stacked: Any) -> bool:
    """Whether a member's parameters include a convolution kernel (4+ dims: H, W, in, out)."""
    return any(len(shape) >= 4 for shape in member_kernels(stacked))


def auto_chunk(pop: int, stacked: Any = None, platform: str | None = None) -> int:
    """Members ``auto`` vmaps together on one device: ``pop`` (one vmap) or 1 (a compiled loop).

    Measured with ``populax bench update-step`` (docs/benchmarks.md): on
    XLA:CPU a vmapped TD3 update with (256, 256) networks is slower per member
    than one member alone, for two reasons a chunk size does not fix: batched
    ``dot_general`` runs below a plain GEMM's GFLOP/s on XLA:CPU, and vmap
    turns the delayed actor step (a ``lax.cond`` on data) into a select that
    computes it on every update. A compiled loop over unbatched members keeps
    both fast and costs the same per member at every N. With small networks
    (64 wide) the per-op overhead dominates instead and one vmap over all
    members is faster, so on CPU the choice is made from the largest weight
    matrix of the arguments. Accelerators execute the batched program
    efficiently: there the whole population is one vmap.
    """
    platform = platform or jax.default_backend()
    if platform != "cpu" or stacked is None or has_convolutions(stacked):
        # convolutions inside a compiled loop run ~9x slower on XLA:CPU: vmap them
        return pop
    return 1 if largest_weight(stacked) >= LOOP_MIN_WEIGHT else pop


def auto_devices(pop: int, devices: int | None = None) -> int:
    """Devices ``auto`` splits the population over: all local ones when they divide ``pop``, else 1.

    On a multi-core CPU, ``populax.devices.use_all_cores()`` exposes one XLA
    device per core (the CLI does this at start): members on different
    devices run concurrently, one per core, instead of every small matmul
    being split over all cores, which measured 1.3-1.5x the env steps/s of
    one device (docs/benchmarks.md). On several accelerators this is the
    paper's "population over devices".
    """
    devices = jax.local_device_count() if devices is None else devices
    return devices if devices > 1 and pop % devices == 0 else 1


def executor_shards(executor: str, pop: int) -> int:
    """Devices an executor splits ``pop`` members over (sharded: all; auto: all when they divide ``pop``)."""
    if executor == "sharded":
        return jax.local_device_count()
    return auto_devices(pop) if executor == "auto" else 1


def members_sharding(shards: int) -> Sharding:
    """Where a block of members lives when its executor splits it over ``shards`` devices (``executor_shards``):
    the member axis over all local devices (:func:`members_mesh`, as ``shard_members`` runs it), or the first
    device."""
    if shards > 1:
        return NamedSharding(members_mesh(), PartitionSpec("pop"))
    return SingleDeviceSharding(jax.devices()[0])


def auto_plan(pop: int, stacked: Any, platform: str | None = None, devices: int | None = None) -> tuple[int, int]:
    """``(devices, chunk)`` that ``auto`` uses for ``pop`` members with arguments ``stacked``."""
    shards = auto_devices(pop, devices)
    per_device = pop // shards
    return shards, auto_chunk(per_device, stacked, platform)


def compile_members(fn: Callable[..., Any], chunk: int, pop: int, shards: int,
                    donate: bool = False) -> Callable[..., Any]:
    """The jitted program of ``pop`` members over ``shards`` devices, ``chunk`` members vmapped at a time."""
    mapped = map_members(fn, chunk, pop // shards)
    return shard_members(mapped, donate) if shards > 1 else jax.jit(mapped, donate_argnums=donated(donate))


def fit_chunk(fn: Callable[..., Any], stacked: tuple, pop: int, shards: int, chunk: int,
              available: int | None, donate: bool = False) -> tuple[int, Callable[..., Any]]:
    """Halve ``chunk`` until the compiled program fits in ``available`` bytes of one device.

    An accelerator runs the whole population as one vmap, and a vmap holds
    every member's activations at once; where those do not fit beside the
    population's state, members go through in chunks (``lax.map`` over vmaps
    of ``chunk``). XLA's own memory analysis of the compiled program decides
    (``program_bytes``): the arguments once, the outputs that do not reuse a
    donated argument's memory, and the temporaries. Returns the chunk and its
    jitted program, which finds the compilation made here in its cache (no
    second compile).
    """
    while True:
        program = compile_members(fn, chunk, pop, shards, donate)
        needed = program_bytes(program.lower(*stacked).compile(), stacked, shards)
        if available is None or chunk == 1 or needed <= available:
            return chunk, program
        chunk = (chunk + 1) // 2


def auto_executor(pop: int, platform: str | None = None, available: int | None = None) -> Executor:
    """Pick devices, then vmap or a compiled loop, from the first call's arguments (see ``auto_plan``).

    On an accelerator (``platform`` other than cpu, default: JAX's backend) the
    vmap is chunked where its memory would not fit (``fit_chunk``;
    ``available``: bytes one device has for the program, its arguments
    included; default ``memory.program_budget_bytes``).
    """

    def executor(fn: Callable[..., Any], donate: bool = False) -> Callable[..., Any]:
        chosen: dict[str, Callable[..., Any]] = {}

        def pick(stacked: tuple) -> Callable[..., Any]:
            if "fn" not in chosen:
                where = platform or jax.default_backend()
                shards, chunk = auto_plan(pop, stacked, where)
                if where == "cpu":
                    chosen["fn"] = compile_members(fn, chunk, pop, shards, donate)
                else:
                    limit = program_budget_bytes(stacked, shards) if available is None else available
                    chunk, chosen["fn"] = fit_chunk(fn, stacked, pop, shards, chunk, limit, donate)
                chosen["chunk"] = chunk
            return chosen["fn"]

        def run(*stacked):
            return pick(stacked)(*stacked)

        def plan(*stacked) -> int:
            """Members ``auto`` vmaps together on one device for these arguments (tests, benchmarks)."""
            pick(stacked)
            return chosen["chunk"]

        def lower(*stacked):
            """As jax.jit's ``lower`` (the bench's cost analysis)."""
            return pick(stacked).lower(*stacked)

        run.plan, run.lower = plan, lower
        return run

    return executor


def make_executor(name: str, pop: int) -> Executor:
    """The executor called ``name`` for a population of ``pop`` members."""
    if name == "sequential":
        return sequential_executor
    if name == "vmap":
        return vmap_executor
    if name == "auto":
        return auto_executor(pop)
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
    raise ConfigError(f"--executor: unknown executor {name!r}; allowed: {', '.join(EXECUTOR_CHOICES)}")
