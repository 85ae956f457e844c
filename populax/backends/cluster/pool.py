"""The Ray side of ``--executor ray``: W ``BlockWorker`` actors, started once, called all at once, and a worker
that dies restarted by Ray (``max_restarts``) and handed to the backend to reload its block.

``RayBackend`` (``backend.py``) decides what the workers do; this pool only knows how to reach them and how to
tell a dead worker from a healthy one whose call failed for want of another's input.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from populax.backends.cluster.worker import BlockWorker
from populax.errors import ConfigError
from populax.run.config import TrainConfig, config_to_dict

MAX_RESTARTS = 3
"""Times Ray restarts one worker before the run gives up."""
RESTART_WAIT_S = 300.0
"""Longest wait for a restarted worker to answer."""


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """ConfigError (one line) unless ``address`` (``--ray-address``) is HOST:PORT where something answers, or a
    form Ray resolves itself (``auto``, ``ray://...``: not checked here, and Ray retries an unreachable one for
    ever): an unreachable HOST:PORT made ray.init retry for ever."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address: expected HOST:PORT of a running cluster's head (`ray start --head "
                          f"--port PORT`), or auto; got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ConfigError(f"--ray-address: cannot reach {address} ({error.strerror or error}); start the cluster "
                          "with `ray start --head --port PORT`, or leave --ray-address out for a private Ray instance "
                          "on this machine") from None


def check_resources(config: TrainConfig, resources: dict[str, float]) -> None:
    """When the Ray instance has fewer CPUs or GPUs in all than the workers ask for, Ray waits for them for ever,
    silently: the private instance (sized by populax) refuses in one line (ConfigError); a cluster
    (``--ray-address``), which may be one that an autoscaler grows, gets a warning line and the run waits."""
    for name, flag, per_worker in (("GPU", "--worker-gpus", config.worker_gpus),
                                   ("CPU", "--worker-cpus", config.worker_cpus)):
        needed, present = config.workers * per_worker, float(resources.get(name, 0.0))
        if needed <= present + 1e-9:
            continue
        short = f"{flag} {per_worker:g}: {config.workers} workers need {needed:g} {name}s and the Ray instance has {present:g}"
        if not config.ray_address:
            raise ConfigError(f"{short}; lower {flag} or --workers")
        print(f"populax: warning: {short} now; the run waits until the cluster has them (an autoscaler adds "
              "nodes; a fixed cluster never will: stop with Ctrl-C and lower it)", file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet_ray_start() -> Iterator[None]:
    """``ray.init`` without the two lines every run printed and no user can act on: Ray's note that token
    authentication is on (it is, and should be), and JAX's warning that ``os.fork()`` was called (Ray's
    ``subprocess`` launches of its daemons fork and at once exec: no JAX thread runs in the child)."""
    token_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = token_log.level
    token_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            yield
    finally:
        token_log.setLevel(level)


class CallLost(NamedTuple):
    """The result of a worker call that did not complete (``WorkerPool.call_all``)."""

    reloaded: bool
    """True: the worker itself died and was reloaded; False: a worker it took input from was. The caller makes
    the call again (``RayBackend.apply_edits``), unless the reload already did (``RayBackend._redo_edits``)."""


class WorkerPool:
    """The run's Ray workers, one per block, and their recovery."""

    def __init__(self, config: TrainConfig, run_dir: Path, reload: Callable[[int, Exception], None]):
        """``reload(block, error)``: bring worker ``block``, restarted by Ray, back to its members' state (the
        backend's: from the last checkpoint)."""
        self.config, self.run_dir, self.reload = config, run_dir, reload
        self.workers: list[Any] = []
        self.pids: list[int] = []

    def connect(self) -> None:
        """Join ``--ray-address``'s cluster, or start a private Ray instance on loopback sized for the workers."""
        import ray

        if ray.is_initialized():
            return
        config = self.config
        with quiet_ray_start():
            if config.ray_address:
                check_reachable(config.ray_address)
                try:
                    ray.init(address=config.ray_address, logging_level="warning", log_to_driver=False)
                except (ConnectionError, ValueError) as error:
                    if config.ray_address == "auto" and "Could not find any running Ray instance" in str(error):
                        raise ConfigError("--ray-address auto: no Ray cluster runs on this machine (start one with "
                                          "`ray start --head`, give HOST:PORT of a remote head, or leave "
                                          "--ray-address out for a private Ray instance)") from None
                    hint = ("; if the cluster uses token authentication (`ray start`'s default), run populax with "
                            "RAY_AUTH_MODE=token and the cluster's token (~/.ray/auth_token)"
                            if os.environ.get("RAY_AUTH_MODE") != "token" else
                            "; RAY_AUTH_MODE=token is set: check that the token is the cluster's")
                    raise ConfigError(f"--ray-address: Ray could not join the cluster at {config.ray_address} "
                                      f"({str(error).splitlines()[0]}){hint}") from None
            else:  # a private instance on loopback, sized for the workers
                # Ray starts workers at nice 15 (for its own daemons' sake); here the workers *are* the training,
                # and on a shared machine nice 15 starves them (measured: minutes per chunk beside other jobs).
                os.environ.setdefault("RAY_worker_niceness", "0")
                # address="local": always a new instance; without it ray.init joins a cluster that `ray start` left
                # on this machine (found in /tmp/ray), where num_cpus is refused.
                ray.init(address="local", num_cpus=max(1, math.ceil(config.workers * config.worker_cpus)),
                         include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="warning",
                         log_to_driver=False)
        try:
            check_resources(config, ray.cluster_resources())
        except ConfigError:
            ray.shutdown()
            raise

    def start(self, blocks: list[np.ndarray], space: Any, assignment: np.ndarray | None) -> None:
        """One ``BlockWorker`` per block (a mixed-shape population's: with the static ``space`` and its members'
        cohorts), once; their pids go to ``RUN/ray_workers.json``."""
        if self.workers:
            return
        import ray

        self.connect()
        config = self.config
        actor = ray.remote(BlockWorker).options(
            num_cpus=config.worker_cpus, num_gpus=config.worker_gpus, max_restarts=MAX_RESTARTS, max_task_retries=0,
            # one XLA device per worker: the block is its unit of work (on GPUs Ray picks the device)
            runtime_env={"env_vars": {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}},
        )
        settings = config_to_dict(config)
        self.workers = [actor.remote(settings, [int(m) for m in members], space,
                                     None if space is None else assignment[members])
                        for members in blocks]
        self.pids = ray.get([worker.pid.remote() for worker in self.workers])
        self.write_pids()

    def write_pids(self) -> None:
        """The workers' process ids in ``RUN/ray_workers.json`` (what a user or a test kills to test recovery)."""
        if self.run_dir.is_dir():
            (self.run_dir / "ray_workers.json").write_text(json.dumps({"pids": self.pids}))

    def call_all(self, method: str, args: list[tuple], blocks: list[int] | None = None, retry: bool = True,
                  depends: list[list[int]] | None = None) -> list[Any]:
        """``method(*args[i])`` on workers ``blocks`` (default: all) at once.

        A worker that died is restarted by Ray and reloaded (the backend's ``reload``: its block back to where
        the others stand) and, with ``retry``, asked again: a chunk, an
        evaluation or a gather runs again on the reloaded block. Without
        ``retry`` (an edit, whose copy sources are exports made for that one
        call) its result is ``CallLost(reloaded=True)``, for the caller to make
        again with new exports. ``depends[i]``: the workers call i takes input
        from (an edit's copy sources, through their ``export``); when one of
        them died, it is that worker that is reloaded, not the healthy one
        whose call failed for want of its input, and that call's result is
        ``CallLost(reloaded=False)``.
        """
        import ray
        from ray.exceptions import RayActorError

        blocks = list(range(len(self.workers))) if blocks is None else blocks
        pending = [getattr(self.workers[b], method).remote(*a) for b, a in zip(blocks, args)]
        results: list[Any] = []
        reloaded: set[int] = set()
        for i, (block, ref, arguments) in enumerate(zip(blocks, pending, args)):
            try:
                results.append(ray.get(ref))
            except RayActorError as error:
                lost = self._recover(block, depends[i] if depends else [], error, reloaded)
                if lost.reloaded and retry:
                    results.append(ray.get(getattr(self.workers[block], method).remote(*arguments)))
                else:
                    results.append(lost)
        return results

    def _recover(self, block: int, depends: list[int], error: Exception, reloaded: set[int]) -> CallLost:
        """A call on worker ``block`` failed with ``error``: reload whichever of it and the workers it took input
        from (``depends``) died, i.e. was restarted by Ray (a new pid), once each (``reloaded``: those already
        reloaded during this round of calls). A failure with no restart in sight reloads ``block``, as before."""
        dead = [b for b in dict.fromkeys([block, *depends]) if b not in reloaded and self.restarted(b)]
        if not dead and block not in reloaded and not any(b in reloaded for b in depends):
            dead = [block]
        for b in dead:
            self.reload(b, error)
            reloaded.add(b)
        return CallLost(reloaded=block in reloaded)

    def restarted(self, block: int) -> bool:
        """Whether worker ``block`` died since its pid was last seen (it answers with a new one, once restarted)."""
        return self.await_restart(block) != self.pids[block]

    def await_restart(self, block: int) -> int:
        """The pid of worker ``block`` once Ray has restarted it."""
        import ray
        from ray.exceptions import RayActorError

        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            try:
                return ray.get(self.workers[block].pid.remote())
            except RayActorError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
