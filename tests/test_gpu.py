"""The accelerator paths on a real GPU (``pytest -m gpu``); on a machine without one they skip with the reason.

tests/test_accelerator_paths.py exercises the same code with the CPU backend by *naming* the platform and a
memory; here nothing is named: JAX's default backend is the GPU, the memory is the device's own report and the
buffers are device buffers. benchmarks/gpu_study.sh runs this file first on the GPU machine; brax on CUDA is
exercised there by its learning and throughput stages.
"""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from populax.edits import kept_before_chunk
from populax.memory import device_memory_bytes, program_budget_bytes
from populax.population import auto_executor, auto_plan, vmap_executor
from populax.run.config import TrainConfig
from populax.runtime import init_population, prepare, run

ON_GPU = jax.default_backend() == "gpu"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not ON_GPU, reason=f"needs a GPU (JAX's default backend here is {jax.default_backend()!r})"),
]


def small_config(tmp_path, **overrides) -> TrainConfig:
    """A Pendulum TD3 run of a few hundred steps with small networks."""
    settings = dict(pop=4, total_steps=400, eval_every=200, learning_starts=50, batch_size=32, hidden=(32, 32),
                    eval_episodes=1, out=str(tmp_path / "run"), progress=False, tensorboard=False)
    return dataclasses.replace(TrainConfig(), **{**settings, **overrides})


def test_auto_with_one_gpu_is_one_vmap_of_every_member():
    """One device: ``auto`` does not split the members, and vmaps all of them (no compiled loop, as on CPU)."""
    if jax.local_device_count() != 1:
        pytest.skip(f"this machine has {jax.local_device_count()} GPUs; the check is for one")
    w = jnp.ones((16, 256, 256))
    assert auto_plan(16, (w,)) == (1, 16)


def test_memory_is_the_devices_own_report(monkeypatch):
    """The memory check and ``fit_chunk`` read the GPU's allocator (bytes_limit - bytes_in_use), not the host's RAM."""
    monkeypatch.delenv("POPULAX_DEVICE_MEMORY", raising=False)
    stats = jax.local_devices()[0].memory_stats()
    assert stats and "bytes_limit" in stats
    free = device_memory_bytes()
    assert 0 < free <= int(stats["bytes_limit"])
    arguments = (jnp.ones((1024, 1024)),)
    assert program_budget_bytes(arguments) >= free


def member_fn(w, x):
    """Two matmuls with activations as large as the inputs; outputs that sum positive terms (well conditioned
    under TF32 rounding, unlike a sum of signed terms near zero)."""
    hidden = jnp.tanh(x @ w)
    return jnp.square(hidden @ w.T).mean(), jnp.abs(hidden).mean()


def test_fit_chunk_takes_the_real_memory_analysis_and_chunks_a_population_bigger_than_one_vmap(monkeypatch):
    """With the device's real free memory the whole population is one vmap; with a budget below what one vmap's
    temporaries need (as on a GPU whose memory the population's state fills), members go through in chunks
    (``lax.map`` over vmaps) and the numbers are the same."""
    monkeypatch.delenv("POPULAX_DEVICE_MEMORY", raising=False)
    pop = 16
    w = jax.random.normal(jax.random.key(0), (pop, 512, 512)) / 20
    x = jax.random.normal(jax.random.key(1), (pop, 8192, 512))
    roomy = auto_executor(pop)(member_fn)
    assert roomy.plan(w, x) == pop
    arguments = w.nbytes + x.nbytes
    one_member_temporaries = 8192 * 512 * 4 * 3
    tight = auto_executor(pop, available=arguments + 4 * one_member_temporaries)(member_fn)
    chunk = tight.plan(w, x)
    assert 1 <= chunk < pop
    reference = vmap_executor(member_fn)(w, x)
    for got, ref in zip(tight(w, x), reference):
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-2)  # TF32 matmuls, other batch shapes


def test_a_chunk_updates_the_population_in_place_on_the_gpu(tmp_path):
    """Donation on a real device: after a chunk the input's device buffers are freed (deleted), the driver's kept
    copy survives, and JAX emits no 'donated buffers were not usable' warning."""
    setup = prepare(small_config(tmp_path))
    population, _ = setup.backend.advance(init_population(setup), 0)
    assert {device.platform for leaf in jax.tree.leaves(population) for device in leaf.devices()} == {"gpu"}
    kept = kept_before_chunk(population)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        after, _ = setup.backend.advance(population, 1)
        jax.block_until_ready(after)
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(population))
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(kept) + jax.tree.leaves(after))
    assert not [w for w in caught if "donat" in str(w.message)]
    assert np.asarray(after.experience.size).tolist() == [400] * 4


def test_a_run_trains_on_the_gpu_and_auto_equals_vmap(tmp_path):
    """A whole run (driver, evaluation, checkpoint) on the GPU; ``auto`` (fit_chunk on the real memory) gives the
    same returns as a plain vmap of the same members."""
    auto = run(prepare(small_config(tmp_path, out=str(tmp_path / "auto"))))
    vmap = run(prepare(small_config(tmp_path, out=str(tmp_path / "vmap"), executor="vmap")))
    assert (tmp_path / "auto" / "summary.json").is_file()
    np.testing.assert_allclose(np.asarray(auto.returns), np.asarray(vmap.returns), rtol=1e-4, atol=1e-3)

