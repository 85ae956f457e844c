"""One runtime: every strategy with every algorithm on both backends, failures, the exact
update-to-data ratio, and the refill after a resume without replay buffers (seeded, tiny runs)."""

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matrix import matrix_cells

import populax
from populax.backends.host.member import make_plan
from populax.errors import ConfigError
from populax.loop.shape import update_phase
from populax.population import select_member
from populax.run.checkpoint import list_checkpoints
from populax.run.resume import resume
from populax.runtime import prepare, run

# (algo, environment id, the hyperparameter PBT/PB2 explore)
CELLS = [
    ("td3", "Pendulum-v1", "lr-actor"),
    ("td3", "gymnasium:Pendulum-v1", "lr-actor"),
    ("sac", "Pendulum-v1", "lr-actor"),
    ("sac", "gymnasium:Pendulum-v1", "lr-actor"),
    ("dqn", "CartPole-v1", "lr"),
    ("dqn", "gymnasium:CartPole-v1", "lr"),
    ("ppo", "CartPole-v1", "lr"),
    ("ppo", "gymnasium:CartPole-v1", "lr"),
]
# One cell per kind of backend and kind of member (off-policy compiled, on-policy host) in the default suite;
# the rest of the algorithm x backend matrix is marked `extended` (make test-extended; CI runs it).
MATRIX = matrix_cells(CELLS, {("td3", "Pendulum-v1"), ("ppo", "gymnasium:CartPole-v1")},
                      lambda cell: f"{cell[0]}-{cell[1]}")


def matrix_config(tmp_path, algo, env, hp_name, **overrides):
    """Three evaluation periods of ~200 env steps per member; a PBT round after the second; off-policy
    algorithms learn from 3-step returns (n-step runs every cell; one-step runs in most other tests)."""
    settings = dict(
        env=env, algo=algo, pop=4, total_steps=600, eval_every=200, eval_episodes=1, hidden=(16, 16),
        n_step=1 if algo == "ppo" else 3,
        batch_size=32, learning_starts=100, seed=1, strategy="pbt", hp={hp_name: "loguniform:1e-4,3e-3"},
        algo_options={"rollout-len": 50} if algo == "ppo" else {}, out=str(tmp_path / "pbt"),
        progress=False, tensorboard=False,
    )
    settings.update(overrides)
    return populax.TrainConfig(**settings)


def leaves_equal(a, b) -> bool:
    return all(bool(jnp.array_equal(x, y, equal_nan=True)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def poison(member: int, at_chunk: int):
    """A ``before_chunk`` hook writing NaN into every float leaf of ``member``'s agent at chunk ``at_chunk``."""

    def hook(population, chunk):
        if chunk != at_chunk:
            return population
        nan = lambda x: x.at[member].set(jnp.nan) if jnp.issubdtype(x.dtype, jnp.floating) else x  # noqa: E731
        return population.replace(agent=jax.tree.map(nan, population.agent))

    return hook


def record_populations(store: dict):
    """A ``before_chunk`` hook keeping a copy of each chunk's incoming members (the strategy's output of the
    chunk before; a copy, since the chunk updates the members it is given in place)."""

    def hook(population, chunk):
        store[chunk] = jax.tree.map(jnp.copy, population)
        return population

    return hook


def lineage(run_dir) -> list[dict]:
    path = run_dir / "lineage.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("algo, env, hp_name", MATRIX)
def test_every_strategy_runs_with_every_algorithm_on_both_backends(tmp_path, algo, env, hp_name):
    """independent (with a NaN member re-initialised), pbt and pb2 (exploits copy their source exactly)."""
    setup = prepare(matrix_config(tmp_path, algo, env, hp_name))
    assert setup.backend.kind == ("host" if env.startswith("gymnasium:") else "compiled")
    chunk_steps = setup.chunk_steps
    for strategy in ("independent", "pbt", "pb2"):
        run_dir = tmp_path / strategy
        # One backend for the three runs: its compiled functions are reused.
        cell = setup._replace(config=dataclasses.replace(setup.config, strategy=strategy, out=str(run_dir)),
                              run_dir=run_dir)
        seen: dict = {}
        hook = poison(member=1, at_chunk=1) if strategy == "independent" else record_populations(seen)
        result = run(cell, before_chunk=hook)
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["strategy"] == strategy and summary["env_steps_per_member"] == 3 * chunk_steps
        events = lineage(run_dir)
        if strategy == "independent":
            # The NaN member is found after chunk 1, re-initialised, and the run completes with finite members.
            assert [(e["event"], e["member"], e["env_step"]) for e in events] == [("reinit", 1, 2 * chunk_steps)]
            assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(result.population.agent))
            assert np.isfinite(result.returns).all(), result.returns
            continue
        exploits = [e for e in events if e["event"] == "exploit"]
        assert exploits, f"{strategy}: no exploit event"
        for event in exploits:
            after = seen[event["env_step"] // chunk_steps]  # the members right after the round
            assert leaves_equal(select_member(after.agent, event["member"]), select_member(after.agent, event["source"]))
            assert event["new_hparams"][hp_name] == pytest.approx(
                float(np.asarray(getattr(after.hparams, hp_name.replace("-", "_")))[event["member"]]), rel=1e-6)
        assert summary["lineage_events"]["exploit"] == len(exploits)


@pytest.mark.parametrize("algo, env, fields", [
    ("td3", "Pendulum-v1", ("actor", "actor_target", "actor_opt")),
    ("dqn", "CartPole-v1", None),
])
def test_policy_copy_takes_the_declared_fields(tmp_path, algo, env, fields):
    """--pbt-copy policy: TD3's actor fields and not its critics; DQN's whole (single) network."""
    from populax.edits import no_edits

    setup = prepare(matrix_config(tmp_path, algo, env, "lr-actor" if algo == "td3" else "lr", pbt_copy="policy"))
    assert setup.algorithm.policy_fields == fields
    population = populax.runtime.init_population(setup)
    edits = no_edits(population.hparams, 4, setup.algorithm.policy_fields).replace(  # member 1 <- member 2
        targets=np.array([1]), sources=np.array([2]), whole=np.array([fields is None]))
    copied = setup.backend.apply_edits(population, population, edits)
    copied_fields = fields or tuple(population.agent.__dataclass_fields__)
    distinct = 0
    for name in population.agent.__dataclass_fields__:
        source, target = (select_member(getattr(population.agent, name), m) for m in (2, 1))
        if leaves_equal(source, target):
            continue  # equal at init (optimizer moments, counters): a copy is not observable
        distinct += 1
        assert leaves_equal(select_member(getattr(copied.agent, name), 1), source) == (name in copied_fields), name
    assert distinct >= 2  # parameters differ between members, so the check bites


UTD_PAIRS = [(5, 0.5), (1, 0.4), (2, 0.75)]


@pytest.mark.parametrize("envs, ratio, phase", [(5, 0.5, (2, 5)), (3, 0.5, (2, 3)), (1, 0.4, (5, 2)),
                                                (2, 0.75, (2, 3)), (1, 0.25, (4, 1)), (4, 1.5, (1, 6))])
def test_update_phase_is_exact(envs, ratio, phase):
    iterations, updates = update_phase(envs, ratio)
    assert (iterations, updates) == phase and updates / (iterations * envs) == pytest.approx(ratio, rel=1e-12)


def test_inexact_ratio_is_refused_naming_what_works(tmp_path):
    with pytest.raises(ConfigError, match=r"--updates-per-step 0\.333 .*nearest that work: .*0\.3333333333") as error:
        prepare(matrix_config(tmp_path, "td3", "Pendulum-v1", "lr-actor", updates_per_step=0.333))
    assert "\n" not in str(error.value) and not (tmp_path / "pbt").exists()
    with pytest.raises(ConfigError, match="--updates-per-step"):
        make_plan(matrix_config(tmp_path, "td3", "gymnasium:Pendulum-v1", "lr-actor", updates_per_step=0.333), False)


@pytest.mark.parametrize("env", ["Pendulum-v1", "gymnasium:Pendulum-v1"])
def test_updates_done_equal_the_ratio_times_env_steps(tmp_path, env):
    """Both backends: after learning_starts (a multiple of every phase here), updates = ratio x env steps."""
    for envs, ratio in UTD_PAIRS:
        config = matrix_config(tmp_path, "td3", env, "lr-actor", strategy="independent", hp={}, pop=2,
                               envs_per_member=envs, updates_per_step=ratio, learning_starts=60, total_steps=240,
                               eval_every=120, out=str(tmp_path / f"utd-{envs}-{ratio}"), hidden=(8,))
        summary = run(prepare(config)).summary
        steps, updates = summary["env_steps_per_member"], summary["updates_per_member"]
        assert steps >= 240 and updates == round(ratio * (steps - 60)), (envs, ratio, steps, updates)


@pytest.mark.parametrize("env", ["Pendulum-v1", "gymnasium:Pendulum-v1"])
def test_resume_without_buffers_refills_before_updating(tmp_path, env):
    """A checkpoint without replay buffers: no updates until max(batch, learning_starts) new transitions."""
    config = matrix_config(tmp_path, "td3", env, "lr-actor", strategy="independent", hp={}, pop=2,
                           total_steps=600, eval_every=200, checkpoint_every=200, save_buffer=False,
                           out=str(tmp_path / "run"), hidden=(8,), overlap=False)
    full = run(prepare(config)).summary
    assert full["updates_per_member"] == 600 - 100
    run_dir = tmp_path / "run"
    for newer in list_checkpoints(run_dir)[1:]:  # back to the checkpoint after 200 steps (100 updates)
        shutil.rmtree(newer)
    (run_dir / "summary.json").unlink()
    lines = []
    summary = resume(run_dir, warn=lines.append).summary
    assert any("no replay buffers" in line and "100 new transitions" in line for line in lines)
    # 200 steps done, then 100 refill steps without updates, then ratio 1: 100 + 300 updates, not 500.
    assert summary["updates_per_member"] == 100 + (600 - 300)


def test_pbt_rescues_ppo_from_a_bad_learning_rate_prior(tmp_path):
    """PPO on gymnax CartPole, lr ~ loguniform(1e-6, 1e-1), pop 8, 60k steps per member, the CartPole
    recipe otherwise: PBT (its defaults) ends with a median return at least 100 above independent's."""
    from populax.run.config import build_config
    from populax.run.recipes import recipe_layer

    _, recipe = recipe_layer("ppo", "CartPole-v1")
    medians = {}
    for strategy in ("independent", "pbt"):
        config = build_config([recipe, {
            "pop": 8, "total_steps": 60_000, "seed": 0, "strategy": strategy, "hp": {"lr": "loguniform:1e-6,1e-1"},
            "out": str(tmp_path / strategy), "progress": False, "tensorboard": False}])
        medians[strategy] = run(prepare(config)).summary["median_return"]
    assert medians["pbt"] >= medians["independent"] + 100, medians


@pytest.mark.extended  # make test-extended; CI runs it (host PBT runs in the default suite's strategy matrix)
def test_td3_pbt_on_gymnasium_pendulum_learns(tmp_path):
    """TD3 + PBT on the host backend (Gymnasium Pendulum-v1, overlapped collector): exploit events
    occur and the best member reaches >= -400 within 15k env steps per member."""
    config = populax.TrainConfig(env="gymnasium:Pendulum-v1", algo="td3", pop=4, total_steps=15_000, eval_every=2_500,
                                 hidden=(64, 64), seed=0, strategy="pbt", hp={"lr-actor": "loguniform:1e-4,3e-3"},
                                 eval_episodes=5, out=str(tmp_path / "run"), progress=False, tensorboard=False)
    result = run(prepare(config))
    assert any(e["event"] == "exploit" for e in lineage(result.run_dir))
    assert result.summary["best_return"] >= -400, result.returns


@pytest.mark.parametrize("env", ["Pendulum-v1", "gymnasium:Pendulum-v1"])
def test_reinitialising_a_member_builds_only_its_agent(tmp_path, env):
    """Re-initialisation draws fresh agent states for the failed members alone: no buffers, no other members."""
    from populax.edits import reinitialise

    setup = prepare(matrix_config(tmp_path, "td3", env, "lr-actor", strategy="independent"))
    population = populax.runtime.init_population(setup)
    members = np.array([2])
    keys = jax.random.split(jax.random.key(9), 4)[members]
    fresh = setup.backend.init_agents(keys, jax.tree.map(lambda x: x[members], population.hparams))
    assert type(fresh) is type(population.agent)  # an agent state, nothing else (no replay buffer, no envs)
    assert all(leaf.shape[0] == 1 for leaf in jax.tree.leaves(fresh))
    edited = reinitialise(population, fresh, members)
    assert leaves_equal(select_member(edited.agent, 2), select_member(fresh, 0))
    assert not leaves_equal(select_member(edited.agent, 2), select_member(population.agent, 2))
    for other in (0, 1, 3):
        assert leaves_equal(select_member(edited.agent, other), select_member(population.agent, other))
    assert edited.experience is population.experience
