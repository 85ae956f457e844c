"""The implementations the update-step benchmark compares, behind one interface.

Each implementation owns a population's state and runs "one population-wide
update step" (K updates per member when ``steps_at_once=K``) per call:

* ``jax-sequential``  a Python loop over N jitted single-member updates, each
  member's state its own pytree (what a practitioner writes first);
* ``jax-vmap``        one compiled ``jax.vmap`` of the update;
* ``jax-sharded``     the population axis over all local devices (``shard_map``);
* ``jax-parallel``    one OS process per member, all at once (``populax.bench.parallel``);
* ``torch-sequential``/``torch-vectorized``  the same TD3, SAC or DQN math in
  PyTorch, a loop over members or batched layers with a population axis
  (``populax.bench.torch_td3``, ``torch_sac``, ``torch_dqn``);
* ``auto``            ``populax.population.make_executor("auto", N)``, exactly
  what ``populax train`` uses.

The state is threaded from call to call (TD3's delayed actor step alternates,
as in training); the batch and keys stay fixed on the device.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from populax.bench.cases import BenchCase, Skipped, member_update
from populax.errors import ConfigError
from populax.population import make_executor, members_sharding, select_member, stack_members

IMPLS = ("jax-sequential", "jax-vmap", "jax-sharded", "jax-parallel", "torch-sequential", "torch-vectorized", "auto")


def timed_calls(call: Callable[[], None], calls: int) -> list[float]:
    """Wall time in seconds of each of ``calls`` calls of ``call``."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


class JaxPopulation:
    """A compiled population function ``(state, batch, keys, hparams) -> state``."""

    def __init__(self, case: BenchCase, steps_at_once: int, executor: str, place: Callable[[Any], Any] | None = None):
        fn = make_executor(executor, case.pop)(member_update(case, steps_at_once))
        place = place or (lambda tree: tree)
        self.args = place((case.batch, case.keys, case.hparams))
        self.state = place(case.state)
        start = time.perf_counter()
        self.compiled = fn.lower(self.state, *self.args).compile()
        self.compile_s = time.perf_counter() - start

    def run(self, calls: int) -> list[float]:
        """Time ``calls`` population updates (state threaded)."""

        def call():
            self.state = jax.block_until_ready(self.compiled(self.state, *self.args))

        return timed_calls(call, calls)

    def result(self) -> Any:
        """The current stacked state."""
        return self.state

    def close(self) -> None:
        """Nothing to release."""


class JaxSequential:
    """N separate member states, a Python loop over one jitted member update."""

    def __init__(self, case: BenchCase, steps_at_once: int):
        members = [select_member((case.state, case.batch, case.keys, case.hparams), i) for i in range(case.pop)]
        self.states = [m[0] for m in members]
        self.args = [m[1:] for m in members]
        start = time.perf_counter()
        self.compiled = jax.jit(member_update(case, steps_at_once)).lower(self.states[0], *self.args[0]).compile()
        self.compile_s = time.perf_counter() - start

    def run(self, calls: int) -> list[float]:
        """Time ``calls`` loops over all members."""

        def call():
            self.states = [self.compiled(s, *a) for s, a in zip(self.states, self.args)]
            jax.block_until_ready(self.states)

        return timed_calls(call, calls)

    def result(self) -> Any:
        """The members' states, stacked."""
        return stack_members(self.states)

    def close(self) -> None:
        """Nothing to release."""


def sharded(case: BenchCase, steps_at_once: int) -> JaxPopulation:
    """The population axis split over all local devices, inputs placed there once."""
    devices = jax.local_device_count()
    if case.pop % devices:
        raise Skipped(f"pop {case.pop} is not a multiple of the {devices} local devices")
    sharding = members_sharding(devices)
    return JaxPopulation(case, steps_at_once, "sharded", place=lambda tree: jax.device_put(tree, sharding))


def torch_model(case: BenchCase) -> type:
    """The torch model class of ``case.algo`` (imported lazily); :class:`Skipped` if there is none.

    Each class takes ``(stacked JAX state, stacked hparams, member or None)``
    and has ``prepare(batch, member)``, ``noise_shape(batch)`` (``None``: the
    update draws no noise), ``update(batch, noise)`` and ``params()``.
    """
    if case.algo == "td3":
        from populax.bench.torch_td3 import TorchTD3

        return TorchTD3
    if case.algo == "sac":
        from populax.bench.torch_sac import TorchSAC

        return TorchSAC
    if case.algo == "dqn":
        from populax.bench.torch_dqn import TorchDQN

        if case.shapes.get("torso") != "nature_cnn" or not case.shapes.get("dueling"):
            raise Skipped("the torch DQN is the Nature-CNN dueling network only")
        return TorchDQN
    raise Skipped(f"no torch implementation of {case.algo} yet")


class TorchPopulation:
    """The torch update of ``case.algo``, sequential (one model per member) or vectorized (population axis)."""

    def __init__(self, case: BenchCase, steps_at_once: int, vectorized: bool, noise: list[np.ndarray] | None = None,
                 device: str = "cpu"):
        import torch

        model = torch_model(case)
        self.torch, self.device = torch, torch.device(device)
        self.steps = steps_at_once
        members = [None] if vectorized else list(range(case.pop))
        with self.scope():  # the models' tensors are made on the device
            self.models = [model(case.state, case.hparams, m) for m in members]
        self.batches = [{name: t.to(self.device) for name, t in model.prepare(case.batch, m).items()} for m in members]
        self.noise_shape = model.noise_shape(self.batches[0])
        # Drawn where the update runs (a host draw would add a copy to the device to every timed update).
        self.generator = torch.Generator(device=self.device).manual_seed(
            int(jax.random.randint(case.keys[0], (), 0, 2**31 - 1)))
        # ``noise``: fixed draws per step, leading population axis (to reproduce JAX's numbers in tests),
        # placed on the device once
        self.noise = None if noise is None else [
            torch.from_numpy(np.array(draw, dtype=np.float32)).to(self.device) for draw in noise]
        self.vectorized = vectorized
        self.compile_s = 0.0  # eager: nothing to compile

    def scope(self) -> Any:
        """Where new tensors go: the CUDA device as the default one; on the CPU nothing (a torch function
        mode would add Python work to every op of the timed CPU baseline)."""
        return self.device if self.device.type != "cpu" else contextlib.nullcontext()

    def draw(self, step: int, member: int) -> Any:
        """The standard-normal draws of one member's (or the population's) update, or None."""
        if self.noise_shape is None:
            return None
        if self.noise is None:
            return self.torch.randn(self.noise_shape, generator=self.generator, device=self.device)
        draw = self.noise[step % len(self.noise)]
        return draw if self.vectorized else draw[member]

    def run(self, calls: int) -> list[float]:
        """Time ``calls`` population updates."""

        def call():
            with self.scope():
                for i, (model, batch) in enumerate(zip(self.models, self.batches)):
                    for k in range(self.steps):
                        model.update(batch, self.draw(k, i))
            if self.device.type == "cuda":  # CUDA kernels run asynchronously: time them to the end
                self.torch.cuda.synchronize(self.device)

        return timed_calls(call, calls)

    def result(self) -> dict[str, list[np.ndarray]]:
        """The model's parameters (``params()``, flax layout) stacked over members."""
        per_model = [m.params() for m in self.models]
        if self.vectorized:
            return per_model[0]
        return {name: [np.stack(ps) for ps in zip(*(p[name] for p in per_model))] for name in per_model[0]}

    def close(self) -> None:
        """Nothing to release."""


def torch_device(choice: str = "auto") -> str:
    """The torch baselines' device: ``cuda`` where torch sees a GPU under ``auto``, else ``cpu`` (or as chosen)."""
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--torch-device cuda: this torch build sees no CUDA device; use cpu or auto")
    return choice


def make_impl(name: str, case: BenchCase, steps_at_once: int, device: str = "auto") -> Any:
    """Build (and compile) implementation ``name`` for ``case``; may raise :class:`Skipped`.

    ``device``: where the torch baselines run (auto, cpu, cuda); JAX runs on its default backend."""
    if name == "jax-vmap":
        return JaxPopulation(case, steps_at_once, "vmap")
    if name == "auto":
        return JaxPopulation(case, steps_at_once, "auto")
    if name == "jax-sharded":
        return sharded(case, steps_at_once)
    if name == "jax-sequential":
        return JaxSequential(case, steps_at_once)
    if name in ("torch-sequential", "torch-vectorized"):
        try:
            import torch  # noqa: F401
        except ImportError as error:
            raise Skipped("torch is not installed (pip install 'populax[torch]')") from error
        return TorchPopulation(case, steps_at_once, vectorized=name == "torch-vectorized", device=torch_device(device))
    if name == "jax-parallel":
        from populax.bench.parallel import ParallelPopulation

        return ParallelPopulation(case, steps_at_once)
    raise ConfigError(f"--impl: unknown implementation {name!r}; allowed: {', '.join(IMPLS)}")


def comparable(result: Any) -> dict[str, list[np.ndarray]]:
    """Parameters of any implementation's result, as flat stacked lists per network.

    A torch result is already a dict. A JAX TD3 state is split into actor and
    critic layer lists (what the torch TD3 returns); any other agent state is
    compared leaf by leaf (``{"state": leaves}``).
    """
    if isinstance(result, dict):
        return result
    from populax.agents.td3 import TD3State

    if not isinstance(result, TD3State):
        return {"state": [np.asarray(leaf) for leaf in jax.tree.leaves(result) if jnp.issubdtype(leaf.dtype, jnp.floating)]}
    from populax.bench.torch_td3 import flax_layers

    def flat(net: dict, mlps: tuple[str, ...]) -> list[np.ndarray]:
        return [a for mlp_name in mlps for layer in flax_layers(net, mlp_name) for a in layer]

    return {"actor": flat(result.actor, ("MLP_0",)), "critic": flat(result.critic, ("MLP_0", "MLP_1"))}
