"""One XLA device per CPU core, so that ``auto`` can run members side by side.

XLA:CPU normally exposes a single device and splits every op over all cores.
For a population of small networks that is the wrong grain: a 256x256 matmul
does not split well over cores, while separate members need no coordination
at all. ``--xla_force_host_platform_device_count`` turns each core into a
device; the ``auto`` executor then shards the member axis over them
(``populax.population.auto_devices``). XLA reads the flag once, when its CPU
backend starts, so this must run before the first JAX computation.
"""

from __future__ import annotations

import os

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def use_all_cores(cores: int | None = None) -> int:
    """Ask XLA for one CPU device per core (``cores``, default: the CPUs this process may use).

    Returns the device count in effect. An explicit setting already in
    ``XLA_FLAGS`` wins (the user's or a test's: ``=1`` turns this off). Call it
    before JAX's first computation; once the backend has started, it has no effect.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if DEVICE_COUNT_FLAG in flags:
        return int(flags.split(f"{DEVICE_COUNT_FLAG}=")[1].split()[0])
    cores = cores or available_cores()
    os.environ["XLA_FLAGS"] = f"{flags} {DEVICE_COUNT_FLAG}={cores}".strip()
    return cores


def available_cores() -> int:
    """CPU cores this process may run on (respects taskset/cgroup affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
