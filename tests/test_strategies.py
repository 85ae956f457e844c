"""Population strategies: PBT/PB2 pieces, lineage invariants, failing members (seeded, tiny runs)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import populax
from populax.agents.base import Transition
from populax.agents.td3 import TD3HParams
from populax.buffers import ReplayBuffer, buffer_rewind
from populax.edits import no_edits
from populax.errors import ConfigError
from populax.hparams import Distribution, resolve_specs
from populax.population import select_member
from populax.runtime import init_population, prepare, run
from populax.strategies import make_strategy, pb2, pbt
from populax.strategies.space import from_unit, make_space, to_unit

LR_PRIOR = {"lr-actor": "loguniform:1e-6,1e-1", "lr-critic": "loguniform:1e-6,1e-1", "delay": "1,2,3,4"}


def tiny_config(tmp_path, name, **overrides):
    """A run small enough to compile and train in seconds."""
    settings = dict(
        env="Pendulum-v1", algo="td3", pop=4, total_steps=1_500, eval_every=500, eval_episodes=1,
        hidden=(16, 16), batch_size=32, learning_starts=200, seed=3, strategy="pbt",
        ready_interval=500, hp=dict(LR_PRIOR), out=str(tmp_path / name), progress=False, tensorboard=False,
    )
    settings.update(overrides)
    return populax.TrainConfig(**settings)


def test_truncation_selection_replaces_bottom_and_failed_from_top():
    fitness = np.array([5.0, -math.inf, 1.0, 9.0, 7.0, 3.0, 8.0, 2.0])
    replaced, sources = pbt.truncation_selection(fitness, 2, 2, jax.random.key(0))
    # The failed member always goes, then the two worst healthy ones.
    assert list(replaced) == [1, 2, 7]
    assert set(sources) <= {3, 6}  # the two best
    # No round due: only the failed member is replaced.
    replaced, sources = pbt.truncation_selection(fitness, 0, 2, jax.random.key(0))
    assert list(replaced) == [1] and sources[0] in (3, 6)


def test_perturb_stays_in_bounds_and_moves_integers():
    specs = resolve_specs(TD3HParams, LR_PRIOR, 4)
    dims = make_space(TD3HParams, specs)
    assert [d.name for d in dims] == ["lr_actor", "lr_critic", "delay"]  # fixed ones are not explored
    values = np.array([[1e-6, 1e-1, 1.0], [1e-1, 1e-6, 4.0], [1e-3, 1e-3, 2.0], [2e-6, 5e-2, 3.0]])
    for seed in range(20):
        new = pbt.perturb(dims, values, jax.random.key(seed), resample_prob=0.25)
        for j, d in enumerate(dims):
            assert np.all((new[:, j] >= d.lo) & (new[:, j] <= d.hi)), (d.name, new[:, j])
        assert np.all(new[:, 2] == np.round(new[:, 2]))
        # Without resampling every value moves by x0.8/x1.2 (integers by at least one) unless clipped.
        stepped = pbt.perturb(dims, values, jax.random.key(seed), resample_prob=0.0)
        ratio = stepped[2, :2] / values[2, :2]
        assert np.all(np.isclose(ratio, 0.8) | np.isclose(ratio, 1.2))
        assert stepped[2, 2] in (1.0, 3.0)
    unit = to_unit(dims[0], np.array([1e-6, 1e-3, 1e-1]))
    np.testing.assert_allclose(unit, [0.0, 0.6, 1.0], atol=1e-6)
    np.testing.assert_allclose(from_unit(dims[0], unit), [1e-6, 1e-3, 1e-1], rtol=1e-6)


def test_pb2_suggestion_beats_random_resampling():
    """The GP bandit alone, on a synthetic objective over two hyperparameters."""
    optimum = np.array([0.7, 0.25])

    def improvement(u, t):
        return -np.sum((u - optimum) ** 2, axis=-1) + 0.02 * t

    wins, gp_scores, random_scores = 0, [], []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        u = rng.uniform(size=(24, 2))
        t = np.repeat(np.arange(3.0), 8)
        y = improvement(u, t) + 0.01 * rng.normal(size=24)
        x = np.concatenate([t[:, None], u], axis=1)
        suggested = pb2.suggest(x, y, 3.0, 2, jax.random.key(seed), 2)
        random = np.asarray(jax.random.uniform(jax.random.key(seed + 100), (2, 2)))
        gp_scores.append(improvement(suggested, 3.0).mean())
        random_scores.append(improvement(random, 3.0).mean())
        wins += gp_scores[-1] > random_scores[-1]
    assert wins >= 8, (gp_scores, random_scores)
    assert np.mean(gp_scores) > np.mean(random_scores) + 0.05


def leaves_equal(a, b) -> bool:
    return all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_exploit_copies_whole_member_and_explores_within_bounds(tmp_path):
    setup = prepare(tiny_config(tmp_path, "copy", total_steps=1_000))
    strategy = make_strategy(setup)
    population = init_population(setup)
    population, metrics = setup.backend.advance(population, 0)
    metrics = {k: np.asarray(v) for k, v in metrics.items()}
    # chunk 0 of 2 at step 500 = ready_interval: a round is due. Member 1 is the worst, 2 the best.
    returns = np.array([-500.0, -900.0, -100.0, -300.0])
    before = population
    edits, _, events = strategy.update(population, returns, metrics, chunk=0)
    after = setup.backend.apply_edits(population, before, edits)
    assert [(e["member"], e["source"], e["event"]) for e in events] == [(1, 2, "exploit")]
    assert leaves_equal(select_member(after.agent, 1), select_member(before.agent, 2))
    assert leaves_equal(select_member(after.agent, 0), select_member(before.agent, 0))
    # Own environments, data and random stream are kept: a copy does not replay its source.
    assert leaves_equal(select_member(after.experience, 1), select_member(before.experience, 1))
    assert not jnp.array_equal(jax.random.key_data(after.key[1]), jax.random.key_data(after.key[2]))
    new = events[0]["new_hparams"]
    assert new == {k: pytest.approx(v, rel=1e-6) for k, v in strategy.schedules[1][-1]["hparams"].items()}
    assert 1e-6 <= new["lr-actor"] <= 1e-1 and 1e-6 <= new["lr-critic"] <= 1e-1 and 1 <= new["delay"] <= 4
    assert new["gamma"] == events[0]["old_hparams"]["gamma"] == 0.99  # fixed hyperparameters are not explored
    # The policy-only variant (the paper's) copies actor fields and leaves the critic.
    policy_edits = no_edits(before.hparams, 4, setup.algorithm.policy_fields).replace(
        targets=np.array([1]), sources=np.array([2]), whole=np.array([False]))
    policy_copy = setup.backend.apply_edits(before, before, policy_edits)
    assert leaves_equal(select_member(policy_copy.agent.actor, 1), select_member(before.agent.actor, 2))
    assert leaves_equal(select_member(policy_copy.agent.critic, 1), select_member(before.agent.critic, 1))


def test_the_papers_sources_are_every_member_not_replaced(tmp_path):
    """--pbt-bottom 0.4 --pbt-top 0.6 (Flajolet et al. 2022's code: a replaced member copies one drawn from all the
    members above the bottom 40%): of 10 members the worst 4 are replaced, each by one of the other 6, and the
    draws reach past the best quarter (which is all the earlier cap of half, and --pbt-top <= 0.5, allowed)."""
    setup = prepare(tiny_config(tmp_path, "paper", pop=10, pbt_bottom=0.4, pbt_top=0.6, fitness_window=1,
                                hp={**LR_PRIOR, "delay": "choice:1,2,3,4"}))
    strategy = make_strategy(setup)
    population = init_population(setup)
    population, metrics = setup.backend.advance(population, 0)
    returns = -100.0 * np.arange(10.0)  # member 0 best, member 9 worst
    _, _, events = strategy.update(population, returns, {k: np.asarray(v) for k, v in metrics.items()}, chunk=0)
    assert sorted(e["member"] for e in events) == [6, 7, 8, 9]
    sources = [e["source"] for e in events]
    assert set(sources) <= set(range(6)) and max(sources) >= 3, sources


@pytest.mark.parametrize("env", ["Pendulum-v1", pytest.param("gymnasium:Pendulum-v1", marks=pytest.mark.extended)])
def test_reset_optimizer_gives_the_copied_actor_fresh_adam_state(tmp_path, env):
    """--pbt-copy policy --pbt-reset-optimizer (the paper's learners): the target takes its source's actor with
    Adam's moments and step count at 0, where a plain policy copy takes the source's; its critic and the critic's
    optimizer stay its own. On the compiled and the host backend (their apply_edits)."""
    host = dict(overlap=False) if env.startswith("gymnasium:") else {}
    agents = {}
    for reset in (False, True):
        setup = prepare(tiny_config(tmp_path, f"reset-{reset}", env=env, total_steps=1_000, pbt_copy="policy",
                                    pbt_reset_optimizer=reset, **host))
        strategy = make_strategy(setup)
        population = init_population(setup)
        setup.backend.start(population)
        try:
            population, metrics = setup.backend.advance(population, 0)
            before = setup.backend.gather(population)
            edits, _, events = strategy.update(population, np.array([-500.0, -900.0, -100.0, -300.0]),
                                               {k: np.asarray(v) for k, v in metrics.items()}, chunk=0)
            after = setup.backend.gather(setup.backend.apply_edits(population, before, edits))
        finally:
            setup.backend.stop()
        assert [(e["member"], e["source"]) for e in events] == [(1, 2)]
        agents[reset] = (select_member(before.agent, 2), select_member(before.agent, 1), select_member(after.agent, 1))
    for reset, (source, own, copied) in agents.items():
        assert leaves_equal(copied.actor, source.actor) and leaves_equal(copied.critic, own.critic)
        assert leaves_equal(copied.critic_opt, own.critic_opt)
        assert int(source.actor_opt.count) > 0  # the source has learned
        if reset:
            assert int(copied.actor_opt.count) == 0
            assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(copied.actor_opt))
        else:
            assert leaves_equal(copied.actor_opt, source.actor_opt)


def test_reset_optimizer_is_refused_for_an_algorithm_that_declares_no_optimizer_states(tmp_path):
    from custom_algorithm import DDPG

    undeclared = DDPG._replace(name="ddpg-undeclared", optimizer_fields=None)
    with pytest.raises(ConfigError, match="--pbt-reset-optimizer: ddpg-undeclared does not declare its optimizer"):
        prepare(tiny_config(tmp_path, "ddpg", algo=undeclared, pbt_reset_optimizer=True,
                            hp={"lr-actor": "loguniform:1e-6,1e-1"}))
    assert not (tmp_path / "ddpg").exists()
    actor_only = DDPG._replace(name="ddpg-actor-only", policy_fields=("actor",))  # its policy holds no optimizer
    with pytest.raises(ConfigError, match="--pbt-reset-optimizer: --pbt-copy policy copies none of ddpg-actor-only"):
        prepare(tiny_config(tmp_path, "actor-only", algo=actor_only, pbt_reset_optimizer=True, pbt_copy="policy",
                            hp={"lr-actor": "loguniform:1e-6,1e-1"}))


def test_pbt_lineage_is_reproducible_and_bounded(tmp_path):
    lineages = []
    for name in ("a", "b"):
        result = populax.train(tiny_config(tmp_path, name))
        lineages.append((result.run_dir / "lineage.jsonl").read_text())
        summary = json.loads((result.run_dir / "summary.json").read_text())
    assert lineages[0] == lineages[1]
    events = [json.loads(line) for line in lineages[0].splitlines()]
    assert len(events) == 2  # rounds at 500 and 1000 (none after the last evaluation), one member each
    for e in events:
        assert e["event"] == "exploit" and e["member"] != e["source"]
        assert e["fitness"] <= e["source_fitness"]
        assert 1e-6 <= e["new_hparams"]["lr-actor"] <= 1e-1 and e["new_hparams"]["delay"] in (1, 2, 3, 4)
    hp = result.population.hparams
    assert np.all((np.asarray(hp.lr_critic) >= 1e-6 * 0.999) & (np.asarray(hp.lr_critic) <= 1e-1 * 1.001))
    schedule = summary["best_member_schedule"]
    assert schedule[0]["env_step"] == 0 and [s["env_step"] for s in schedule] == sorted(s["env_step"] for s in schedule)
    final = summary["members"][summary["best_member"]]["hparams"]
    assert schedule[-1]["hparams"] == final
    assert summary["lineage_events"] == {"exploit": 2}
    assert (result.run_dir / "report" / "lineage.png").stat().st_size > 1000


def test_buffer_rewind_drops_the_last_transitions_and_keeps_the_rest():
    """A failed member's buffer (capacity 8) loses the chunk's transitions; older ones it did not overwrite
    move to the front."""
    def after(values, position, size):
        data = Transition(*(jnp.asarray(values, jnp.float32) for _ in range(5)))
        return ReplayBuffer(data=data, position=jnp.int32(position), size=jnp.int32(size))

    def rewound(buffer, position, size, written):
        out = buffer_rewind(buffer, jnp.int32(position), jnp.int32(size), jnp.int32(written))
        valid = np.asarray(out.data.reward)[: int(out.size)]
        return valid.tolist(), int(out.position), int(out.size)

    # 3 old transitions (1, 2, 3), then 2 written by the failed chunk (-1): nothing wrapped
    assert rewound(after([1, 2, 3, -1, -1, 0, 0, 0], 5, 5), 3, 3, 2) == ([1, 2, 3], 3, 3)
    # full ring, position 6 before the chunk; its 4 transitions overwrote slots 6, 7, 0, 1 (oldest first: 2..5 stay)
    assert rewound(after([-1, -1, 2, 3, 4, 5, -1, -1], 2, 8), 6, 8, 4) == ([2, 3, 4, 5], 4, 4)
    # the chunk wrote the whole ring (or more): nothing old is left
    assert rewound(after([-1] * 8, 3, 8), 3, 8, 9) == ([], 0, 0)


def test_exploit_with_copy_buffer_writes_only_the_copied_rows_in_place():
    """--pbt-copy-buffer: member 1 takes member 2's replay buffer, the others keep theirs; the buffers are
    written in place (the population's old buffers are donated)."""
    from populax.edits import apply_edits
    from populax.member import Member

    pop, capacity = 4, 5
    rows = jnp.arange(pop * capacity, dtype=jnp.float32).reshape(pop, capacity)
    buffer = ReplayBuffer(data=Transition(*(rows + i for i in range(5))), position=jnp.arange(pop, dtype=jnp.int32),
                          size=jnp.full((pop,), capacity, jnp.int32))
    population = Member(agent={"w": jnp.arange(pop, dtype=jnp.float32)}, hparams=jnp.zeros(pop), obs_stats=None,
                        experience=buffer, env=None, env_steps=jnp.zeros(pop, jnp.int32),
                        learn_from=jnp.zeros(pop, jnp.int32), key=jax.random.split(jax.random.key(0), pop))
    expected = np.asarray(rows)[[0, 2, 2, 3]]
    edits = no_edits(population.hparams, pop, None, copy_experience=True).replace(
        targets=np.array([1]), sources=np.array([2]), whole=np.array([True]))
    copied = apply_edits(population, population, edits, init_agents=None)
    assert buffer.data.reward.is_deleted()
    np.testing.assert_array_equal(np.asarray(copied.experience.data.reward), expected + 2)
    assert np.asarray(copied.experience.position).tolist() == [0, 2, 2, 3]
    assert np.asarray(copied.agent["w"]).tolist() == [0, 2, 2, 3]


def test_failed_target_that_takes_its_sources_buffer_learns_from_when_the_source_does():
    """--pbt-copy-buffer: a failed member's rollback leaves it 2 of 5 rows, so its learn_from moves to a refill
    point; replaced by a copy of member 2 with member 2's (full) buffer, it learns from when member 2 does,
    not after refilling a buffer it no longer has."""
    from populax.edits import apply_edits, kept_before_chunk, no_edits
    from populax.member import Member

    pop, capacity = 4, 5
    rows = jnp.arange(pop * capacity, dtype=jnp.float32).reshape(pop, capacity)
    before = Member(agent={"w": jnp.arange(pop, dtype=jnp.float32)}, hparams=jnp.zeros(pop), obs_stats=None,
                    experience=ReplayBuffer(data=Transition(*(rows + i for i in range(5))),
                                            position=jnp.full((pop,), 2, jnp.int32), size=jnp.full((pop,), 2, jnp.int32)),
                    env=None, env_steps=jnp.full((pop,), 10, jnp.int32), learn_from=jnp.full((pop,), 4, jnp.int32),
                    key=jax.random.split(jax.random.key(0), pop))
    kept = kept_before_chunk(before)

    def after():  # the chunk: 3 env steps per member, each buffer full (5 rows); apply_edits donates it
        experience = jax.tree.map(jnp.copy, before.experience).replace(position=jnp.zeros(pop, jnp.int32),
                                                                        size=jnp.full((pop,), 5, jnp.int32))
        return before.replace(env_steps=before.env_steps + 3, experience=experience)

    edits = no_edits(jnp.zeros(pop), pop, copy_experience=True, refill=32).replace(
        rollback=np.array([False, True, False, False]), targets=np.array([1]), sources=np.array([2]),
        whole=np.array([True]))
    rolled_back = apply_edits(after(), kept, edits.replace(targets=np.zeros(0, int), sources=np.zeros(0, int),
                                                         whole=np.zeros(0, bool)), None)
    assert np.asarray(rolled_back.learn_from).tolist() == [4, 13 + 32 - 2, 4, 4]  # alone: waits for a refill
    edited = apply_edits(after(), kept, edits, None)
    assert np.asarray(edited.learn_from).tolist() == [4, 4, 4, 4]
    assert int(edited.experience.size[1]) == 5 and np.asarray(edited.agent["w"]).tolist() == [0, 2, 2, 3]


def poison(member: int, at_chunk: int):
    """A ``before_chunk`` hook writing NaN into every leaf of ``member``'s agent before chunk ``at_chunk``."""

    def hook(population, chunk):
        if chunk != at_chunk:
            return population
        agent = jax.tree.map(lambda x: x.at[member].set(jnp.nan) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                             population.agent)
        return population.replace(agent=agent)

    return hook


@pytest.mark.parametrize("strategy, on_failure, kind", [
    ("pbt", "reinit", "replace_failed"),
    ("pbt-policy", "reinit", "replace_failed"),  # the paper's policy-only copy: a failed member still gets critics
    ("independent", "reinit", "reinit"),
    ("independent", "freeze", "freeze"),
])
def test_nan_member_is_detected_and_handled(tmp_path, strategy, on_failure, kind):
    # ready_interval 1500 = the last evaluation: no regular PBT round in this run, so the only event is the failure.
    copy = "policy" if strategy == "pbt-policy" else "all"
    config = tiny_config(tmp_path, kind, strategy=strategy.removesuffix("-policy"), on_failure=on_failure,
                         ready_interval=1_500, pbt_copy=copy)
    result = run(prepare(config), before_chunk=poison(member=2, at_chunk=1))
    events = [json.loads(line) for line in (result.run_dir / "lineage.jsonl").read_text().splitlines()]
    assert [(e["event"], e["member"], e["env_step"]) for e in events] == [(kind, 2, 1_000)]
    assert np.all(np.isfinite(result.returns)), result.returns
    agent = result.population.agent
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(agent))
    if kind == "replace_failed":
        assert events[0]["source"] != 2
    # The failed member's buffer lost the failing chunk's 500 transitions (it updated them in place); a frozen
    # one loses every chunk's. What it holds is finite (no transition acted by NaN parameters).
    sizes = np.asarray(result.population.experience.size).tolist()
    assert sizes == [1_500, 1_500, 500 if kind == "freeze" else 1_000, 1_500]
    kept = jax.tree.map(lambda x: np.asarray(x[2, : sizes[2]]), result.population.experience.data)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(kept))
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["lineage_events"] == {kind: 1}


@pytest.mark.parametrize("overrides, message", [
    ({"strategy": "cma"}, "--strategy"),
    ({"ready_interval": 750}, "--ready-interval"),
    ({"pbt_bottom": 0.7}, "--pbt-bottom"),
    ({"pbt_bottom": 0.4, "pbt_top": 0.7}, r"--pbt-top must be a fraction in \(0, 1 - --pbt-bottom\] = \(0, 0.6\]"),
    ({"pbt_copy": "critic"}, "--pbt-copy"),
    ({"on_failure": "ignore"}, "--on-failure"),
    ({"strategy": "pb2", "hp": {}}, "--strategy pb2"),
    ({"strategy": "pbt", "pop": 1, "hp": {"lr-actor": "loguniform:1e-6,1e-1"}}, "--strategy pbt: needs --pop >= 2"),
])
def test_bad_strategy_settings_are_config_errors(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        prepare(tiny_config(tmp_path, "bad", **overrides))
    assert not (tmp_path / "bad").exists()


def test_space_uses_user_bounds_within_valid_range():
    specs = {"gamma": Distribution("uniform", (0.9, 1.0)), **resolve_specs(TD3HParams, {}, 2)}
    specs["gamma"] = Distribution("uniform", (0.9, 1.0))
    (dim,) = make_space(TD3HParams, specs)
    assert (dim.name, dim.lo, dim.hi, dim.log) == ("gamma", 0.9, 1.0, False)


def test_cli_strategy_flags(tmp_path, capsys):
    from populax.cli import main, parse_train_args

    config = parse_train_args(["--strategy", "pbt", "--pbt-copy", "policy", "--pbt-copy-buffer", "true", "--ready-interval", "4000"])
    assert (config.strategy, config.pbt_copy, config.pbt_copy_buffer, config.ready_interval) == ("pbt", "policy", True, 4000)
    assert main(["train", "--strategy", "pb2", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "--strategy pb2" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
