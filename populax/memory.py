"""Will the population fit? A check before anything is allocated.

A population's state (agents, optimiser states, replay buffers, envs) lives
on the device for the whole run: N members' replay buffers are most of it
(TD3 on HalfCheetah shapes, 1M transitions: ~150 MB per member; N = 256 of
them do not fit on one GPU). ``check_population_fits`` measures the state's
size from shapes alone (``jax.eval_shape``: nothing is allocated) and refuses
in one line, naming the settings to change, when it cannot fit. A chunk
updates the population in place (its input is donated), so the state counts
once, plus the copy the driver keeps before each chunk to roll failed
members back: everything but the buffers' transitions (``kept_bytes``).
Where nothing is donated (``--executor sequential``: the stacked input
lives on while the Python loop runs) the state counts twice.

Where the memory is: an accelerator reports its own limit
(``device.memory_stats()``); on the CPU the host's available memory counts,
once for all CPU devices (they share it). ``POPULAX_DEVICE_MEMORY`` (bytes,
or with a K/M/G/T suffix) overrides both: a smaller limit for a test, or a
share of a GPU that other processes use too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from populax.errors import ConfigError

MEMORY_LIMIT_ENV = "POPULAX_DEVICE_MEMORY"
"""Environment variable: the device memory populax may use, e.g. 512M or 40G (overrides what the device reports)."""
UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str) -> int:
    """``"512M"`` -> 536870912; plain digits are bytes (ConfigError naming the variable otherwise)."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (value[:-1], value[-1]) if value and value[-1] in UNITS else (value, "")
    try:
        size = float(number) * UNITS[unit]
    except ValueError:
        raise ConfigError(f"{MEMORY_LIMIT_ENV}={text!r}: expected bytes, e.g. 2147483648, 512M or 40G") from None
    if size <= 0:
        raise ConfigError(f"{MEMORY_LIMIT_ENV}={text!r}: must be positive")
    return int(size)


def host_available_bytes() -> int | None:
    """Memory the host can still give (MemAvailable on Linux; None where unknown)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def device_memory_bytes(device: Any = None) -> int | None:
    """Bytes one device can still allocate: the override, else the device's own report, else the host's (CPU)."""
    if os.environ.get(MEMORY_LIMIT_ENV):
        return parse_bytes(os.environ[MEMORY_LIMIT_ENV])
    device = device or jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return host_available_bytes()


def tree_bytes(shapes: Any) -> int:
    """Bytes of a pytree of arrays or ``jax.ShapeDtypeStruct``s."""
    return sum(math.prod(leaf.shape) * itemsize(leaf.dtype) for leaf in jax.tree.leaves(shapes))


def itemsize(dtype: Any) -> int:
    """Bytes per entry; a typed PRNG key counts as its key data (two uint32 for threefry)."""
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return 8
    return np.dtype(dtype).itemsize


def members_per_memory(pop: int, shards: int, platform: str) -> int:
    """Members whose state shares one memory: all of them on the CPU (one RAM), a device's share elsewhere."""
    return pop if platform == "cpu" else math.ceil(pop / max(1, shards))


def format_bytes(size: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} TiB"


def transitions_bytes(shapes: Any) -> int:
    """Bytes of the replay buffers' transitions (frames, for frame storage) in a population (0 without buffers)."""
    from populax.buffers import buffer_without_transitions

    experience = getattr(shapes, "experience", None)
    return 0 if experience is None else tree_bytes(experience) - tree_bytes(buffer_without_transitions(experience))


def kept_bytes(shapes: Any) -> int:
    """Bytes of the copy the driver keeps before each chunk: the state less the buffers' transitions
    (``edits.kept_before_chunk``)."""
    return tree_bytes(shapes) - transitions_bytes(shapes)


def program_bytes(compiled: Any, arguments: Any, shards: int = 1) -> int:
    """Bytes one device holds while ``compiled`` runs (XLA's memory analysis): its arguments, the
    outputs that do not reuse a donated argument's memory, and its temporaries."""
    resident = tree_bytes(arguments) // max(1, shards)
    analysis = compiled.memory_analysis()
    if analysis is None:  # no analysis: assume nothing is reused and no temporaries
        return 2 * resident
    fresh = max(0, int(analysis.output_size_in_bytes) - int(analysis.alias_size_in_bytes))
    return resident + fresh + int(analysis.temp_size_in_bytes)


def program_budget_bytes(arguments: Any, shards: int = 1) -> int | None:
    """Bytes one device has for a program whose ``arguments`` are already on it: ``POPULAX_DEVICE_MEMORY``
    as it is (a budget for everything), else what the device has free plus what the arguments hold."""
    if os.environ.get(MEMORY_LIMIT_ENV):
        return parse_bytes(os.environ[MEMORY_LIMIT_ENV])
    free = device_memory_bytes()
    return None if free is None else free + tree_bytes(arguments) // max(1, shards)


def check_population_fits(init: Callable[..., Any], keys: jax.Array, hparams: Any, *, shards: int = 1,
                          platform: str | None = None, available: int | None = None,
                          settings: str = "--buffer-size or --pop", donated: bool = True,
                          separate_memories: bool = False) -> int:
    """Refuse (ConfigError, one line) a population whose state cannot fit; return the bytes it needs per memory.

    ``init(keys, hparams)`` is the backend's population init; only its shapes
    are traced. ``shards``: devices the members are split over (each has its
    own memory on an accelerator; with ``separate_memories`` each has its own
    memory on any platform: Ray workers on a cluster's nodes). ``available`` defaults to
    ``device_memory_bytes()``; unknown memory is not checked. ``donated``:
    the chunk updates the state in place (the state once, plus the kept copy);
    otherwise the state counts twice (the input and the output of a chunk).
    """
    platform = platform or jax.default_backend()
    shapes = jax.eval_shape(init, keys, hparams)
    pop = int(keys.shape[0])
    member = tree_bytes(shapes) / pop
    kept = (kept_bytes(shapes) if donated else tree_bytes(shapes)) / pop
    members = math.ceil(pop / max(1, shards)) if separate_memories else members_per_memory(pop, shards, platform)
    needed = int((member + kept) * members)
    available = device_memory_bytes() if available is None else available
    if available is not None and needed > available:
        where = "the host" if platform == "cpu" else f"one {platform} device"
        copy = (f"plus {format_bytes(kept)} each kept before a chunk" if donated
                else "twice: before and after a chunk")
        raise ConfigError(
            f"{settings}: the population's state needs {format_bytes(needed)} ({members} members x "
            f"{format_bytes(member)}, {copy}) but {where} has {format_bytes(available)} free; "
            f"lower {settings}" + ("" if platform == "cpu" else ", or split the members over more devices")
        )
    return needed
