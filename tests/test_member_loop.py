"""The member loop is written once (``populax.loop``): both backends build the same loop and the same loop facts
for one config, and its learn step does what the backends rely on."""

import pytest

from populax.agents import get_algorithm
from populax.backends.compiled import make_compiled_backend
from populax.backends.host import make_host_backend
from populax.population import make_executor
from populax.run.config import TrainConfig


def built_spec(algo: str, env: str, **fields):
    """(loop shape, AgentSpec, env steps per member of the whole run) a backend builds for ``env`` (the AgentSpec
    caught on its way to ``make``)."""
    caught = []
    original = get_algorithm(algo)
    algorithm = original._replace(make=lambda spec: caught.append(spec) or original.make(spec))
    config = TrainConfig(env=env, algo=algo, pop=2, hidden=(8,), **fields)
    executor = make_executor("vmap", 2)
    if env.startswith("gymnasium:"):
        backend = make_host_backend(config, algorithm, env.split(":", 1)[1], executor)
        return backend.plan.loop, caught[0], backend.num_chunks * backend.chunk_steps
    backend = make_compiled_backend(config, algorithm, env, executor)
    return backend.loop, caught[0], backend.num_chunks * backend.chunk_steps


PHASE_FIELDS = ("envs_per_member", "iterations_per_phase", "updates_per_phase", "learning_starts", "batch_size",
                "n_step")


@pytest.mark.parametrize("algo, env, fields", [
    # learning_starts 1,003 is not a whole number of 4-step phases: the updates the loop runs start one phase
    # later than (steps - learning_starts) x ratio says; both backends must build the count the loop runs.
    ("dqn", "CartPole-v1", dict(learning_starts=1_003, updates_per_step=0.25, total_steps=4_000, eval_every=1_000)),
    ("td3", "Pendulum-v1", dict(envs_per_member=3, updates_per_step=0.5, learning_starts=90, total_steps=1_200,
                                eval_every=300, n_step=3)),
    ("ppo", "CartPole-v1", dict(envs_per_member=2, total_steps=2_048, eval_every=512,
                                algo_options={"rollout_len": 64})),
])
def test_both_backends_build_the_same_loop_and_loop_facts(algo, env, fields):
    compiled_shape, compiled_spec, compiled_total = built_spec(algo, env, **fields)
    host_shape, host_spec, host_total = built_spec(algo, f"gymnasium:{env}", **fields)
    for name in PHASE_FIELDS:
        assert getattr(compiled_shape, name) == getattr(host_shape, name), name
    assert compiled_shape.on_policy == host_shape.on_policy == (algo == "ppo")
    # Each backend's run is whole chunks of its own (the host's chunk is also whole blocks, so it may be longer);
    # the gradient steps the algorithm is told of are those its loop runs in them, counted here independently.
    for shape, spec, total in ((compiled_shape, compiled_spec, compiled_total), (host_shape, host_spec, host_total)):
        assert total >= fields["total_steps"] and total % shape.steps_per_phase == 0
        phase = shape.steps_per_phase
        if shape.on_policy:
            runs = total // phase * 10 * 4  # PPO's default epochs x minibatches per rollout
        else:
            starts = fields["learning_starts"]
            runs = sum(shape.updates_per_phase for end in range(phase, total + 1, phase) if end > starts)
            assert spec.steps_per_update == phase / shape.updates_per_phase
        assert spec.total_updates == runs, (shape, total)
