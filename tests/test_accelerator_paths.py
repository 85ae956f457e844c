"""What populax does on an accelerator, exercised with the CPU backend: the memory check and auto's chunking."""

import dataclasses
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cli_process import cli

from populax.errors import ConfigError
from populax.memory import check_population_fits, parse_bytes
from populax.population import auto_executor, vmap_executor
from populax.run.config import TrainConfig
from populax.runtime import prepare
from populax.runtime.setup import member_keys


def test_memory_check_refuses_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(cli("train", "--env", "Pendulum-v1", "--pop", "8", "--total-steps", "100000", "--out", str(out)),
                            env={**os.environ, "POPULAX_DEVICE_MEMORY": "64M"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()
    assert len(message) == 1 and "Traceback" not in result.stderr
    assert message[0].startswith("populax: error: --buffer-size or --pop: the population's state needs")
    assert "64.0 MiB free" in message[0]
    assert not out.exists()


def test_memory_check_counts_buffers_per_device_on_accelerators():
    """A population that fits the host's RAM is refused when one accelerator's share of it does not fit."""
    config = TrainConfig(pop=4, total_steps=50_000, hidden=(16, 16), out="unused")
    setup = prepare(config)
    keys, init = member_keys(0, 4), setup.backend.init_population
    needed_cpu = check_population_fits(init, keys, setup.hparams, platform="cpu", available=10**12)
    buffers = 4 * 50_000 * (3 + 1 + 1 + 3 + 1) * 4  # 4 members' (obs, act, rew, next_obs, term), once (donated)
    assert buffers <= needed_cpu < 1.1 * buffers
    copied = check_population_fits(init, keys, setup.hparams, platform="cpu", available=10**12, donated=False)
    assert 2 * buffers <= copied < 2.2 * buffers  # not donated (--executor sequential): input and output
    per_gpu = check_population_fits(init, keys, setup.hparams, platform="gpu", shards=2, available=needed_cpu // 2 + 1)
    assert per_gpu <= needed_cpu // 2 + 1
    with pytest.raises(ConfigError, match=r"^--buffer-size or --pop: .* one gpu device has .* split the members"):
        check_population_fits(init, keys, setup.hparams, platform="gpu", shards=1, available=needed_cpu // 2)


def test_memory_limit_setting_is_parsed_or_refused():
    assert parse_bytes("512M") == 512 * 2**20 and parse_bytes("2GiB") == 2 * 2**30 and parse_bytes("4096") == 4096
    with pytest.raises(ConfigError, match="POPULAX_DEVICE_MEMORY='lots'"):
        parse_bytes("lots")


def member_fn(w, x):
    hidden = jnp.tanh(x @ w)
    return (hidden @ w.T).sum(), hidden.mean()


def test_auto_on_an_accelerator_is_one_vmap_and_chunks_where_memory_requires():
    """On a GPU ``auto`` vmaps all members of a device; a small device memory makes it chunk, same numbers."""
    pop, per_device = 8, 8 // jax.local_device_count()  # conftest: 2 CPU devices, as on a 2-GPU machine
    w = jax.random.normal(jax.random.key(0), (pop, 256, 256))
    x = jax.random.normal(jax.random.key(1), (pop, 2048, 256))
    roomy = auto_executor(pop, platform="gpu", available=None)(member_fn)
    assert roomy.plan(w, x) == per_device
    state = (w.nbytes + x.nbytes) // jax.local_device_count()  # the arguments, once
    tight = auto_executor(pop, platform="gpu", available=state + 2048 * 256 * 4 * 3)(member_fn)
    assert 1 <= tight.plan(w, x) < per_device
    for got, ref in zip(tight(w, x), vmap_executor(member_fn)(w, x)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5)


def leaves(tree):
    return jax.tree.leaves(tree)


def test_a_chunk_updates_the_population_in_place(tmp_path):
    """The compiled chunk donates its input (deleted after it ran), the driver's kept copy survives, no
    donation warning reaches the user; the host learner's insert donates the replay buffers."""
    import warnings

    from populax.edits import kept_before_chunk
    from populax.runtime import init_population

    config = TrainConfig(pop=2, total_steps=200, eval_every=100, learning_starts=50, batch_size=16, hidden=(8,),
                         eval_episodes=1, out=str(tmp_path / "run"), progress=False, tensorboard=False)
    setup = prepare(config)
    # The first chunk's input is made by the init on one device; split over the 2 CPU devices (conftest) it is
    # resharded and the copy donated. From the second chunk on the input is the program's own output.
    population, _ = setup.backend.advance(init_population(setup), 0)
    kept = kept_before_chunk(population)
    assert kept.experience.data is None and kept.experience.size.shape == (2,)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        after, _ = setup.backend.advance(population, 1)
    assert all(leaf.is_deleted() for leaf in leaves(population))
    assert not any(leaf.is_deleted() for leaf in leaves(kept) + leaves(after))
    assert not [w for w in caught if "donat" in str(w.message)]
    assert np.asarray(after.experience.size).tolist() == [200, 200]

    host = prepare(dataclasses.replace(config, env="gymnasium:Pendulum-v1", out=str(tmp_path / "host")))
    members = host.backend.init_population(member_keys(0, 2), host.hparams)
    rows = jax.tree.map(lambda x: x[:, :3] + 1, members.experience.data)
    members = host.backend.functions.insert(members, rows, members.obs_stats)  # resharded, as above
    inserted = host.backend.functions.insert(members, rows, members.obs_stats)
    assert all(leaf.is_deleted() for leaf in leaves(members.experience))
    assert np.asarray(inserted.experience.size).tolist() == [6, 6] and np.asarray(inserted.env_steps).tolist() == [6, 6]
    assert float(inserted.experience.data.reward[1, 5]) == 1.0
