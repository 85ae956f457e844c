"""Checks of the sharded executor on 4 forced CPU devices; run as a script by tests/test_sharded.py.

XLA reads its device count once per process, and the suite's processes have
2 devices (conftest), so these checks run in a child process started with
``XLA_FLAGS=--xla_force_host_platform_device_count=4``. Usage:
``python tests/sharded_checks.py equality|pbt OUT_DIR``; exit 0 when the check holds.
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np

from populax.hparams import member_hparams
from populax.run.checkpoint import list_checkpoints, restore
from populax.run.config import TrainConfig
from populax.run.resume import load_checkpoint, load_setup
from populax.runtime import init_population, prepare, train

HP = {"lr-actor": "1e-4,3e-4,1e-3,3e-3,1e-4,3e-4,1e-3,3e-3", "delay": "1,2,3,2,1,2,3,2"}


def initial(executor: str, env: str = "Pendulum-v1"):
    """(setup, initial members) of a TD3 population of 8 (two chunks of 150 steps, learning from step 50)."""
    config = TrainConfig(env=env, pop=8, total_steps=300, eval_every=150, learning_starts=50, hidden=(32, 32),
                         batch_size=64, executor=executor, hp=HP, out="unused")
    setup = prepare(config)
    return setup, init_population(setup)


def key_free(leaf) -> np.ndarray:
    return np.asarray(jax.random.key_data(leaf) if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf)


def check_init_placement() -> None:
    """The sharded init leaves each device its own 2 members (agents, replay buffers, envs), none all 8, and
    they are the one-device init's members bit for bit; compiled (gymnax) and host (Gymnasium) members."""
    for env in ("Pendulum-v1", "gymnasium:Pendulum-v1"):
        (_, reference), (_, population) = initial("vmap", env), initial("sharded", env)
        for ref, got in zip(jax.tree.leaves(reference), jax.tree.leaves(population), strict=True):
            assert len(got.sharding.device_set) == 4, (env, got.sharding)
            assert {shard.data.shape[0] for shard in got.addressable_shards} == {2}
            np.testing.assert_array_equal(key_free(got), key_free(ref))


def run_chunks(executor: str, chunks: int = 2):
    """Two chunks of 150 steps (learning from step 50: 250 updates per member) of a TD3 population of 8."""
    setup, population = initial(executor)
    for chunk in range(chunks):
        population, metrics = setup.backend.advance(population, chunk)
    return population


def check_equality() -> None:
    """Sharded over 4 devices equals one vmap after 250 updates (tolerances as tests/test_executors.py explains);
    the members start on their devices."""
    check_init_placement()
    reference, population = run_chunks("vmap"), run_chunks("sharded")
    assert int(np.asarray(population.agent.updates)[0]) == 250
    devices = {d for leaf in jax.tree.leaves(population.agent) for d in leaf.sharding.device_set}
    assert len(devices) == 4, devices
    for ref, got in zip(jax.tree.leaves(reference.agent), jax.tree.leaves(population.agent)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-2, atol=1e-2)
        assert np.mean(np.abs(np.asarray(got, np.float64) - np.asarray(ref, np.float64))) < 1e-3


def check_resume_placement(setup) -> None:
    """A resumed sharded run's checkpoint is read onto the devices its init uses (2 of 8 members each, none on
    one device whole), equal to the checkpoint read onto one device."""
    placed = load_checkpoint(setup).population
    whole = restore(newest_checkpoint(setup), jax.eval_shape(lambda: init_population(setup))).population
    for got, ref in zip(jax.tree.leaves(placed), jax.tree.leaves(whole), strict=True):
        assert len(got.sharding.device_set) == 4, got.sharding
        assert {shard.data.shape[0] for shard in got.addressable_shards} == {2}
        np.testing.assert_array_equal(key_free(got), key_free(ref))


def newest_checkpoint(setup) -> Path:
    """The run's newest checkpoint."""
    return list_checkpoints(setup.run_dir)[-1]


def pbt_config(executor: str, out: Path) -> TrainConfig:
    return TrainConfig(pop=8, total_steps=600, eval_every=200, learning_starts=100, hidden=(32, 32), batch_size=64,
                       eval_episodes=2, executor=executor, strategy="pbt", hp={"lr-actor": "loguniform:1e-4,1e-2"},
                       checkpoint_every=200, keep_checkpoints=10, out=str(out), progress=False, tensorboard=False)


def check_pbt(out: Path) -> None:
    """A sharded PBT run (2 members per device): every copy, also between devices, holds its source's weights
    right after the round; the round picks the same members as the vmap run; its checkpoint is read back
    sharded (check_resume_placement). (Returns are not compared: batched
    and sharded matmuls round differently, and a few hundred updates amplify that, see check_equality.)"""
    sharded = train(pbt_config("sharded", out / "sharded"))
    reference = train(pbt_config("vmap", out / "vmap"))
    lineage = [json.loads(line) for line in (sharded.run_dir / "lineage.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (reference.run_dir / "lineage.jsonl").read_text().splitlines()]
    assert [(e["member"], e["source"]) for e in lineage] == [(e["member"], e["source"]) for e in expected]
    exploits = [e for e in lineage if e["event"] == "exploit"]
    across = [e for e in exploits if e["member"] // 2 != e["source"] // 2]  # members 2d, 2d+1 live on device d
    assert across, exploits
    setup = load_setup(sharded.run_dir)
    check_resume_placement(setup)
    template = jax.eval_shape(lambda: init_population(setup))
    for event in exploits:
        chunk = event["env_step"] // 200 - 1
        population = restore(sharded.run_dir / "checkpoints" / f"chunk_{chunk:06d}", template).population
        for leaf in jax.tree.leaves(population.agent):
            np.testing.assert_array_equal(np.asarray(leaf[event["member"]]), np.asarray(leaf[event["source"]]))
        assert member_hparams(population.hparams, event["member"]) == event["new_hparams"]


if __name__ == "__main__":
    assert jax.local_device_count() == 4, "run with XLA_FLAGS=--xla_force_host_platform_device_count=4"
    if sys.argv[1] == "equality":
        check_equality()
    else:
        check_pbt(Path(sys.argv[2]))
    print("ok")
