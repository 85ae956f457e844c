"""The driver's contract, specified against a fake backend (no environment, no compilation worth the name):
stop after a chunk with a checkpoint, roll a failed member back and re-initialise it, resume to the same end.

A member's "agent" is one number that each chunk moves by the member's learning rate; its "return" is that
number. Any backend that keeps populax.backends.Backend's promises gets the same from the driver.
"""

import dataclasses
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from populax.edits import apply_edits
from populax.member import Member
from populax.run.config import TrainConfig
from populax.run.resume import load_checkpoint, load_setup
from populax.runtime import prepare, run


class FakeBackend:
    """A backend whose chunk adds ``lr_actor`` to each member's weight; it can SIGINT itself or poison a member."""

    kind = "fake"

    def __init__(self, chunk_steps: int, num_chunks: int, interrupt_at: int | None = None,
                 poison: tuple[int, int] | None = None):
        self.chunk_steps, self.num_chunks = chunk_steps, num_chunks
        self.interrupt_at, self.poison = interrupt_at, poison
        self.started = self.stopped = 0

    def init_agents(self, keys, hparams):
        return {"w": jnp.zeros(keys.shape[0])}

    def init_population(self, keys, hparams) -> Member:
        pop = keys.shape[0]
        return Member(agent=self.init_agents(keys, hparams), hparams=hparams, obs_stats=None, experience=None, env=None,
                      env_steps=jnp.zeros(pop, jnp.int32), learn_from=jnp.zeros(pop, jnp.int32), key=keys)

    def start(self, population, extra=None):
        self.started += 1

    def advance(self, population, chunk, should_stop=None):
        w = population.agent["w"] + population.hparams.lr_actor
        if self.poison is not None and chunk == self.poison[0]:
            w = w.at[self.poison[1]].set(jnp.nan)
        if chunk == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C during the chunk: the driver stops after it
        population = population.replace(agent={"w": w}, env_steps=population.env_steps + self.chunk_steps)
        return population, {"finite": np.isfinite(np.asarray(w)), "loss": np.asarray(w)}

    def evaluate(self, population, chunk):
        return np.asarray(population.agent["w"])

    def apply_edits(self, population, previous, edits, rows=None):
        return apply_edits(population, previous, edits, self.init_agents, rows)

    def gather(self, population, experience=True):
        return population

    def take_events(self):
        return []

    def extra_state(self):
        return None

    def stop(self):
        self.stopped += 1

    def summary(self):
        return {}

    def member_returns(self, member, member_index, chunk, episodes, seed=None):
        return np.full(episodes, float(member.agent["w"]))

    def member_actor(self, member):
        return lambda obs: obs


LRS = [1e-3, 2e-3, 3e-3, 4e-3]


def fake_setup(tmp_path, **backend_args):
    config = TrainConfig(pop=4, total_steps=600, eval_every=100, hidden=(4,), hp={"lr-actor": LRS},
                         checkpoint_every=100, out=str(tmp_path / "run"), progress=False, tensorboard=False)
    setup = prepare(config)
    return setup._replace(backend=FakeBackend(setup.chunk_steps, setup.num_chunks, **backend_args))


def weights(result) -> np.ndarray:
    return np.asarray(result.population.agent["w"])


def test_an_uninterrupted_run_calls_every_chunk_once_and_checkpoints(tmp_path):
    setup = fake_setup(tmp_path)
    result = run(setup)
    np.testing.assert_allclose(weights(result), 6 * np.asarray(LRS), rtol=1e-6)
    assert setup.backend.started == setup.backend.stopped == 1
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())[-1] == "chunk_000005"
    assert result.summary["env_steps_per_member"] == 600 and not result.interrupted


def test_sigint_stops_after_the_chunk_with_a_checkpoint_and_resume_reaches_the_same_end(tmp_path):
    reference = run(fake_setup(tmp_path / "ref"))
    stopped = run(fake_setup(tmp_path, interrupt_at=2))
    assert stopped.interrupted and not (tmp_path / "run" / "summary.json").exists()
    np.testing.assert_allclose(weights(stopped), 3 * np.asarray(LRS), rtol=1e-6)  # chunks 0, 1, 2 ran
    setup = load_setup(tmp_path / "run")
    setup = setup._replace(backend=FakeBackend(setup.chunk_steps, setup.num_chunks))
    start = load_checkpoint(setup)
    assert start.manifest["chunks_done"] == 3
    resumed = run(setup, start=start)
    np.testing.assert_array_equal(weights(resumed), weights(reference))
    assert resumed.summary["env_steps_per_member"] == 600


@pytest.mark.parametrize("on_failure", ["reinit", "freeze"])
def test_a_member_that_fails_is_rolled_back_and_reinitialised_or_frozen(tmp_path, on_failure):
    setup = fake_setup(tmp_path, poison=(3, 1))  # member 1's weight becomes NaN in chunk 3
    setup = setup._replace(config=dataclasses.replace(setup.config, on_failure=on_failure))
    result = run(setup)
    w = weights(result)
    assert np.isfinite(w).all()
    np.testing.assert_allclose(w[[0, 2, 3]], 6 * np.asarray(LRS)[[0, 2, 3]], rtol=1e-6)  # the others untouched
    if on_failure == "reinit":  # a fresh agent (w = 0) after chunk 3, then chunks 4 and 5
        np.testing.assert_allclose(w[1], 2 * LRS[1], rtol=1e-6)
    else:  # frozen at its state before the failed chunk (3 chunks' worth), never trained again
        np.testing.assert_allclose(w[1], 3 * LRS[1], rtol=1e-6)
    lineage = (tmp_path / "run" / "lineage.jsonl").read_text()
    assert '"member": 1' in lineage


def test_the_fake_backend_keeps_the_declared_protocol():
    from populax.backends import Backend

    for name in Backend.__dict__:
        if not name.startswith("_") and callable(getattr(Backend, name)):
            assert callable(getattr(FakeBackend, name, None)), name
    assert jax.tree.leaves(FakeBackend(1, 1).init_agents(jnp.zeros((2, 2)), None))[0].shape == (2,)
