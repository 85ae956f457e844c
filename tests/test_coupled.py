"""CEM-RL and DvD-TD3: the CEM alone, learning, diversity, NaN safety, the bandit, resume, failures (seeded)."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import populax
from populax.coupled import dvd
from populax.coupled.cem import CEMOptions, cem_ask, cem_init, cem_tell
from populax.errors import ConfigError
from populax.run.checkpoint import list_checkpoints
from populax.run.resume import evaluate_saved_member, resume
from populax.runtime import init_population, prepare, run


def records(run_dir, member=0):
    """metrics.jsonl records of one member."""
    lines = (json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines())
    return [r for r in lines if r.get("member") == member]


def finite_tree(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating))


def leaves_equal(a, b) -> bool:
    return all(bool(jnp.array_equal(x, y, equal_nan=True)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def small_config(tmp_path, algo, name, **overrides):
    settings = dict(env="Pendulum-v1", algo=algo, pop=4, total_steps=600, eval_every=200, eval_episodes=1,
                    hidden=(16, 16), batch_size=32, learning_starts=200, seed=3, out=str(tmp_path / name),
                    progress=False, tensorboard=False)
    settings.update(overrides)
    return populax.TrainConfig(**settings)


# ------------------------------------------------------------------------------------------------ the CEM


def test_cem_minimises_sum_of_abs_to_within_005():
    settings = CEMOptions(sigma_init=1.0)

    def loss(x):
        return jnp.sum(jnp.abs(x - 1.0), axis=-1)

    def generation(state, key):
        samples = cem_ask(state, key, settings, 10)
        return cem_tell(state, samples, -loss(samples), settings), None

    state, _ = jax.lax.scan(generation, cem_init(jnp.zeros(8), settings), jax.random.split(jax.random.key(0), 300))
    assert float(loss(state.mean)) <= 0.05
    assert int(state.generation) == 300 and float(state.damp) < 1e-4  # damp decayed 0.95/gen toward 1e-5


def test_mirrored_sampling_gives_exact_antithetic_pairs():
    settings = CEMOptions(sigma_init=0.3)
    samples = cem_ask(cem_init(jnp.zeros(6), settings), jax.random.key(1), settings, 10)
    np.testing.assert_array_equal(np.asarray(samples[:5]), -np.asarray(samples[5:]))
    around = cem_ask(cem_init(jnp.full(6, 2.0), settings), jax.random.key(1), settings, 10)
    np.testing.assert_allclose(np.asarray(around[:5] + around[5:]), 4.0, atol=1e-6)


def test_cem_tell_ranks_nan_fitness_last_and_keeps_the_mean_finite():
    settings = CEMOptions(sigma_init=0.1)
    state = cem_init(jnp.zeros(3), settings)
    samples = jnp.array([[1.0, 1, 1], [jnp.nan, 0, 0], [2.0, 2, 2], [3.0, 3, 3]])
    told = cem_tell(state, samples, jnp.array([1.0, jnp.nan, 0.0, -1.0]), settings)
    weights = np.log(3 / np.arange(1, 3)) / np.log(3 / np.arange(1, 3)).sum()
    np.testing.assert_allclose(np.asarray(told.mean), weights[0] * 1 + weights[1] * 2, rtol=1e-6)


# ------------------------------------------------------------------------------------------------ CEM-RL


def test_cemrl_pendulum_mean_policy_reaches_minus_300_within_30k_env_steps(tmp_path):
    """10 actors x 3,000 steps = 30k env steps in all; generations of one 200-step episode each."""
    config = populax.TrainConfig(env="Pendulum-v1", algo="cemrl", pop=10, total_steps=3_000, eval_every=200,
                                 eval_episodes=2, hidden=(64, 64), batch_size=100, learning_starts=500, seed=0,
                                 out=str(tmp_path / "cemrl"), progress=False, tensorboard=False)
    result = run(prepare(config))
    curve = [r["mean_policy_return"] for r in records(result.run_dir)]
    assert len(curve) == 15
    assert max(curve) >= -300, curve
    assert result.summary["mean_policy_return"] == pytest.approx(curve[-1])
    assert np.isfinite(result.returns).all()
    # the report says it in words, not only in cem_mean_vs_best.png
    page = (result.run_dir / "report" / "report.md").read_text()
    assert f"**CEM mean actor:** return {result.summary['mean_policy_return']:.1f}" in page
    assert "## CEM mean vs best" in page


# ------------------------------------------------------------------------------------------------ DvD-TD3


def fixed_states(count=64):
    """Pendulum observations (cos, sin, angular velocity) from a fixed key."""
    theta_key, speed_key = jax.random.split(jax.random.key(42))
    theta = jax.random.uniform(theta_key, (count,), minval=-jnp.pi, maxval=jnp.pi)
    speed = jax.random.uniform(speed_key, (count,), minval=-8.0, maxval=8.0)
    return jnp.stack([jnp.cos(theta), jnp.sin(theta), speed], axis=1)


def test_dvd_population_is_more_diverse_than_an_ensemble_at_the_same_step(tmp_path):
    distances = {}
    for name, lam in (("dvd", 0.5), ("ensemble", 0.0)):
        config = small_config(tmp_path, "dvd-td3", name, pop=5, total_steps=2_000, eval_every=1_000,
                              hidden=(32, 32), batch_size=64, learning_starts=500,
                              algo_options={"lambda-mode": "fixed", "lambda-fixed": lam})
        setup = prepare(config)
        result = run(setup)
        policy = setup.backend.program.policy
        actions = jax.vmap(policy, in_axes=(0, None, None))(result.population.agent, None, fixed_states())
        distances[name] = float(dvd.mean_pairwise_distance(actions))
        assert [r["dvd_lambda"] for r in records(result.run_dir)] == [0.0, lam]  # lambda 0 until learning starts
    assert distances["dvd"] > distances["ensemble"], distances


def test_twenty_short_dvd_runs_never_produce_nan_even_from_identical_actors(tmp_path):
    """One compiled program, 20 seeds (10 with every actor a copy of member 0), lambda 0.5 from the start."""
    config = small_config(tmp_path, "dvd-td3", "nan", pop=5, total_steps=200, eval_every=100, hidden=(8, 8),
                          batch_size=20, learning_starts=20, algo_options={"lambda-mode": "fixed"})
    setup = prepare(config)
    train_chunk = setup.backend._train_chunk
    for seed in range(20):
        population = setup.backend.init_population(populax.runtime.setup.member_keys(seed, 5), setup.hparams)
        if seed % 2:
            same = jax.tree.map(lambda x: jnp.broadcast_to(x[:1], x.shape), population.agent)
            population = population.replace(agent=same)
        for _ in range(2):
            population, metrics = train_chunk(population)
        assert finite_tree(population.agent) and finite_tree(population.shared), f"seed {seed}"
        assert all(np.isfinite(np.asarray(v)).all() for k, v in metrics.items() if k != "fitness"), (seed, metrics)
        assert float(metrics["dvd_lambda"][0]) == 0.5


def test_kernel_log_det_and_its_gradient_are_finite_for_identical_members():
    same = jnp.ones((5, 20, 1))
    assert np.isfinite(float(dvd.diversity(same, 1.0, 1e-4)))
    grad = jax.grad(lambda e: dvd.diversity(e, 1.0, 1e-4))(same)
    assert np.isfinite(np.asarray(grad)).all()
    spread = jnp.arange(5.0)[:, None, None] * jnp.ones((5, 20, 1))
    assert float(dvd.diversity(spread, 1.0, 1e-4)) > float(dvd.diversity(same, 1.0, 1e-4))


# ------------------------------------------------------------------------------------------------ both


PER_MEMBER = {"critics": "per-member"}


@pytest.mark.parametrize("algo, options", [
    ("cemrl", {}), ("dvd-td3", {}),
    pytest.param("dvd-td3", PER_MEMBER, marks=pytest.mark.extended),  # make test-extended; CI runs it
], ids=["cemrl", "dvd-td3", "dvd-td3-per-member-critics"])
def test_kill_and_resume_gives_the_parameters_of_an_uninterrupted_run(tmp_path, algo, options):
    """Checkpoint after every chunk; drop the last two (as if killed after chunk 0); resume; compare."""
    # Per-member critics honour per-member critic settings: member 0's critic (lr 0) never moves.
    hp = {"lr-critic": "0,1e-3,1e-3,1e-3"} if options else {}
    # 3-step returns for CEM-RL and per-member critics (both backends' union sampler), one-step for shared DvD.
    n_step = 1 if algo == "dvd-td3" and not options else 3
    config = small_config(tmp_path, algo, "full", checkpoint_every=200, keep_checkpoints=5, algo_options=options,
                          hp=hp, n_step=n_step)
    setup = prepare(config)
    initial = init_population(setup).agent
    full = run(setup)
    killed = tmp_path / "killed"
    shutil.copytree(full.run_dir, killed)
    for path in list_checkpoints(killed)[1:]:
        shutil.rmtree(path)
    resumed = resume(killed)
    assert leaves_equal(resumed.population.agent, full.population.agent)
    assert leaves_equal(resumed.population.shared, full.population.shared)  # critic, CEM / bandit
    assert (killed / "metrics.jsonl").read_text() .count("\n") == (full.run_dir / "metrics.jsonl").read_text().count("\n")
    returns = evaluate_saved_member(killed, member=1, episodes=1).returns  # `populax eval` of one saved actor
    assert returns.shape == (1,) and np.isfinite(returns).all()
    if options:  # each member's critic is its own, checkpointed with it; no shared one
        critics = full.population.agent.critic
        assert full.population.shared.critic is None and int(critics.updates[0]) == int(critics.updates[1]) > 0
        member = lambda tree, i: jax.tree.map(lambda x: x[i], tree)  # noqa: E731
        assert leaves_equal(member(critics.critic, 0), member(initial.critic.critic, 0))
        assert not leaves_equal(member(critics.critic, 1), member(initial.critic.critic, 1))
    if algo == "dvd-td3":  # the bandit's choice is logged every evaluation
        logged = records(killed)
        assert {"dvd_lambda", "bandit_arm", "bandit_mean_0", "bandit_mean_1", "dvd_logdet",
                "dvd_pairwise_distance"} <= set(logged[-1])
        for record in logged:
            arm = int(record["bandit_arm"])
            assert record["dvd_lambda"] in (0.0, 0.5) and arm in (-1, 0, 1)
        assert int(logged[-1]["bandit_arm"]) in (0, 1)  # past the warm-up, the bandit chose
    else:
        assert "mean_policy_return" in json.loads((killed / "summary.json").read_text())


def nan_at(tree, member=None):
    """``tree`` with every float leaf NaN (only member ``member``'s slice when given)."""
    def poison(x):
        return x.at[member].set(jnp.nan) if member is not None else jnp.full_like(x, jnp.nan)
    return jax.tree.map(lambda x: poison(x) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def poison_cem_mean_and_critic(population):
    """The CEM mean and the shared critic: what every later generation of CEM-RL is drawn from and trained by."""
    shared = population.shared
    critic = shared.critic.replace(critic=nan_at(shared.critic.critic))
    return population.replace(shared=shared.replace(cem=shared.cem.replace(mean=nan_at(shared.cem.mean)),
                                                    critic=critic))


def poison_actor_1(population):
    return population.replace(agent=population.agent.replace(actor=nan_at(population.agent.actor, 1)))


def poison_critic_1(population):
    critic = population.agent.critic
    return population.replace(agent=population.agent.replace(critic=critic.replace(critic=nan_at(critic.critic, 1))))


@pytest.mark.parametrize("algo, options, poison, expected", [
    ("cemrl", {}, poison_cem_mean_and_critic, [("reinit", m) for m in range(4)]),
    ("dvd-td3", {}, poison_actor_1, [("reinit", 1)]),
    pytest.param("dvd-td3", PER_MEMBER, poison_critic_1, [("reinit", 1)], marks=pytest.mark.slow),  # suite time
], ids=["cemrl-mean-and-critic", "dvd-td3-actor", "dvd-td3-own-critic"])
def test_a_nan_inside_a_chunk_is_rolled_back_or_reinitialised_and_the_run_completes(tmp_path, algo, options, poison,
                                                                                  expected):
    """Poisoned at the start of chunk 1 (as a fault inside it would): the run ends finite. A non-finite shared
    state (CEM-RL) fails every member and goes back to before the chunk; DvD's NaN actor, or its own NaN
    critic, fails only that member, which is re-initialised."""
    config = small_config(tmp_path, algo, "nan", algo_options=options)
    result = run(prepare(config), before_chunk=lambda population, chunk: poison(population) if chunk == 1 else population)
    assert finite_tree(result.population.agent) and finite_tree(result.population.shared)
    assert np.isfinite(result.returns).all()
    events = [json.loads(line) for line in (result.run_dir / "lineage.jsonl").read_text().splitlines()]
    assert [(e["event"], e["member"]) for e in events] == expected
    if algo == "cemrl":  # generation 1's tell was undone with the shared state; the others happened
        assert int(result.population.shared.cem.generation) == 2
        assert np.isfinite(result.summary["mean_policy_return"])


@pytest.mark.parametrize("overrides, message", [
    (dict(strategy="pbt"), "--strategy: cemrl couples"),
    (dict(pop=1), "--pop: cemrl"),
    (dict(algo_options={"damp-decay": 0}), "--algo-opt.damp-decay"),
])
def test_cemrl_bad_settings_name_the_setting(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        prepare(small_config(tmp_path, "cemrl", "bad", **overrides))


@pytest.mark.parametrize("algo, overrides, message", [
    ("dvd-td3", dict(algo_options={"lambda-mode": "often"}), "--algo-opt.lambda-mode: got 'often'; allowed: bandit"),
    ("dvd-td3", dict(algo_options={"critics": "each"}), "--algo-opt.critics: got 'each'; allowed: shared, per-member"),
    ("dvd-td3", dict(algo_options={"embedding-states": 40}), r"--algo-opt.embedding-states must be in \[1, --batch-size = 32\]"),
    ("dvd-td3", dict(hp={"lr-critic": "uniform:1e-4,1e-3"}), "--hp.lr-critic: give one value .* --algo-opt.critics per-member"),
    ("dvd-td3", dict(hp={"delay": "1,2,2,2"}, algo_options=PER_MEMBER), "--hp.delay: give one value"),
    ("cemrl", dict(hp={"gamma": "0.9,0.99,0.99,0.99"}), "--hp.gamma: give one value .* cemrl's one critic"),
])
def test_coupled_bad_settings_name_the_setting(tmp_path, algo, overrides, message):
    with pytest.raises(ConfigError, match=message):
        prepare(small_config(tmp_path, algo, "bad", **overrides))
    assert not (tmp_path / "bad").exists()


def test_init_population_puts_the_shared_state_outside_the_member_axis(tmp_path):
    setup = prepare(small_config(tmp_path, "cemrl", "layout"))
    population = init_population(setup)
    assert population.shared.cem.mean.ndim == 1  # one distribution for all
    assert jax.tree.leaves(population.agent.actor)[0].shape[0] == 4


@pytest.mark.parametrize("algo, options", [
    ("cemrl", {}),
    pytest.param("dvd-td3", {}, marks=pytest.mark.extended),  # make test-extended; CI runs them
    pytest.param("dvd-td3", PER_MEMBER, marks=pytest.mark.extended),
], ids=["cemrl", "dvd-td3", "dvd-td3-per-member-critics"])
def test_a_short_run_on_gymnasium_pendulum_completes(tmp_path, algo, options):
    """The host backend: the same population steps around the Gymnasium collector."""
    setup = prepare(small_config(tmp_path, algo, "host", env="gymnasium:Pendulum-v1", pop=2, total_steps=400,
                                 learning_starts=100, algo_options=options, n_step=3))
    assert setup.backend.kind == "host"
    result = run(setup)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["env_steps_per_member"] == 400 and np.isfinite(result.returns).all()
    assert finite_tree(result.population.agent) and finite_tree(result.population.shared)
    logged = records(result.run_dir)
    if algo == "cemrl":  # one generation per 200-step episode; the CEM mean actor evaluated each
        assert len(logged) == 2 and np.isfinite(summary["mean_policy_return"])
        assert int(result.population.shared.cem.generation) == 2
    else:
        assert np.isfinite(logged[-1]["dvd_logdet"]) and logged[-1]["dvd_lambda"] in (0.0, 0.5)
    if options:  # two critics, each trained
        assert result.population.shared.critic is None and result.population.agent.critic.updates.tolist() == [300, 300]


# ------------------------------------------------------------------------------------------------ recipes


@pytest.mark.parametrize("recipe, algo, strategy, explored", [
    ("cemrl-Hopper-v5", "cemrl", "independent", set()),
    ("dvd-td3-Humanoid-v5", "dvd-td3", "independent", set()),
    ("cemrl-Pendulum-v1", "cemrl", "independent", set()),
    ("dvd-td3-Pendulum-v1", "dvd-td3", "independent", set()),
    ("td3-pbt-HalfCheetah-v5", "td3", "pbt", {"lr_actor", "lr_critic", "gamma", "sigma", "target_noise", "noise_clip",
                                             "delay"}),
    ("sac-pbt-HalfCheetah-v5", "sac", "pbt", {"lr_actor", "lr_critic", "gamma", "reward_scale"}),
])
def test_the_papers_experiments_are_recipes_that_resolve(tmp_path, recipe, algo, strategy, explored):
    """Each recipe builds a valid run (budget shrunk); the PBT ones really explore their search space."""
    from populax.cli import parse_train_args

    config = parse_train_args(["--config", f"configs/{recipe}.yaml", "--total-steps", "1000",
                               "--out", str(tmp_path / "run")])
    setup = prepare(config)
    assert (setup.config.algo, setup.config.strategy) == (algo, strategy)
    assert {dim.name for dim in setup.dims} == explored
    assert setup.backend.kind == ("compiled" if "Pendulum" in recipe else "host")
    if recipe == "cemrl-Hopper-v5":  # a generation is one 1,000-step episode per actor
        assert setup.chunk_steps == 1000 and setup.config.pop == 10 and setup.config.batch_size == 100


# ------------------------------------------------------------------------------------------------ issue 22


class HostCEMRLRecorder:
    """What a host CEM-RL run did, step by step: which actor acted (a fingerprint of its parameters), whether
    the action was the actor's own (not a random one), the rows the envs returned, and what each generation's
    end credited to which actor."""

    def __init__(self, setup, monkeypatch):
        from populax.backends.host.backend import Learner

        backend = setup.backend
        self.actors, self.greedy, self.blocks, self.credits = [], [], [], []
        act, policy, finish = backend.functions.act, backend.functions.policy, backend.coupled.finish

        def recording_act(agent_state, stats, hparams, obs, key, warming):
            out = act(agent_state, stats, hparams, obs, key, warming)
            self.actors.append(self.fingerprints(agent_state))
            own = np.asarray(policy(agent_state, stats, obs))
            self.greedy.append(np.isclose(np.asarray(out[0]), own, atol=1e-6).all(axis=(1, 2)))
            return out

        def recording_finish(population, fitness, train_returns):
            self.credits.append((len(self.actors), self.fingerprints(population.agent), np.asarray(fitness)))
            return finish(population, fitness, train_returns)

        consume = Learner.consume

        def recording_consume(learner, population, block):
            self.blocks.append(jax.tree.map(np.asarray, (block.rows.obs, block.rows.next_obs, block.rows.reward,
                                                         block.rows.terminated, block.truncated)))
            return consume(learner, population, block)

        backend.functions = backend.functions._replace(act=recording_act)
        backend.coupled = backend.coupled._replace(finish=recording_finish)
        monkeypatch.setattr(Learner, "consume", recording_consume)
        self.envs = setup.config.envs_per_member

    @staticmethod
    def fingerprints(agent) -> list[bytes]:
        leaves = [np.asarray(x).reshape(np.shape(x)[0], -1) for x in jax.tree.leaves(agent.actor)]
        return [row.tobytes() for row in np.concatenate(leaves, axis=1)]

    def steps(self):
        """Per iteration [T, N, E]: obs, next_obs, reward, done (from the rows the envs returned)."""
        def iteration_major(x):  # [N, B*E, ...] per block -> [T, N, E, ...]
            n = x.shape[0]
            return np.swapaxes(x.reshape(n, -1, self.envs, *x.shape[2:]), 0, 1)

        obs, next_obs, reward, terminated, truncated = (np.concatenate([iteration_major(b[i]) for b in self.blocks])
                                                        for i in range(5))
        return obs, next_obs, reward, np.maximum(terminated, truncated) > 0

    def episodes(self, member, env):
        """(first, last iteration, return) of every episode of one env that ended: a new one begins after a
        done, and wherever the next observation is not where the last step led (the env was reset)."""
        obs, next_obs, reward, done = self.steps()
        found, start = [], 0
        for t in range(len(obs)):
            if t > start and not np.array_equal(obs[t, member, env], next_obs[t - 1, member, env]):
                start = t  # a reset cut the running episode
            if done[t, member, env]:
                found.append((start, t, float(reward[start:t + 1, member, env].sum())))
                start = t + 1
        return found


def host_cemrl(tmp_path, monkeypatch, name, **overrides):
    settings = dict(env="gymnasium:Pendulum-v1", pop=2, learning_starts=250, batch_size=32, updates_per_step=0.25)
    settings.update(overrides)
    setup = prepare(small_config(tmp_path, "cemrl", name, **settings))
    recorder = HostCEMRLRecorder(setup, monkeypatch)
    run(setup)
    return recorder


@pytest.mark.parametrize("envs, generation, total", [(3, 0, 1_200), (1, 250, 500)],
                         ids=["E3-generation-of-one-episode", "generation-longer-than-an-episode"])
def test_host_cemrl_credits_each_actor_only_episodes_it_acted_entirely(tmp_path, monkeypatch, envs, generation, total):
    """Gymnasium Pendulum-v1 (200-step episodes), two generations: with E=3 (the collector's blocks used to
    round a 600-step generation up to 624) and with 250-step generations (an episode would straddle two),
    every fitness is, per env, the first episode finished in the generation, acted from its first step to its
    last by the actor it is credited to."""
    recorder = host_cemrl(tmp_path, monkeypatch, "credit", envs_per_member=envs, total_steps=total,
                          algo_options={"generation-steps": generation})
    assert len(recorder.credits) == 2
    begin = 0
    for end, actors, fitness in recorder.credits:
        for member in range(2):
            scored = []
            for env in range(envs):
                first = next(e for e in recorder.episodes(member, env) if begin <= e[1] < end)
                acted = {recorder.actors[t][member] for t in range(first[0], first[1] + 1)}
                assert acted == {actors[member]}, (begin, end, member, env, first)
                scored.append(first[2])
            assert fitness[member] == pytest.approx(np.mean(scored), rel=1e-5)
        begin = end


def sampled_actor_returns(setup, keys, agent, iterations):
    """Per member: what its actor scores in a compiled generation, replayed by hand (the generation's reset
    key from the member's key, ``iterations`` deterministic steps, each env's first episode, averaged)."""
    from populax.backends.compiled.episodes import reset_envs

    env, policy, envs = setup.backend.env, setup.backend.program.policy, setup.config.envs_per_member

    def member(key, actor):
        slots = reset_envs(env, jax.random.split(key)[0], envs)

        def step(carry, step_key):
            obs, state, total, first = carry
            result = jax.vmap(env.step)(jax.random.split(step_key, envs), state, policy(actor, None, obs))
            total = total + result.reward
            ended = jnp.maximum(result.terminated, result.truncated) > 0
            first = jnp.where(jnp.isnan(first) & ended, total, first)
            return (result.obs, result.state, jnp.where(ended, 0.0, total), first), None

        start = (slots.obs, slots.state, jnp.zeros(envs), jnp.full(envs, jnp.nan))
        (_, _, total, first), _ = jax.lax.scan(step, start, jax.random.split(jax.random.key(0), iterations))
        return jnp.mean(jnp.where(jnp.isnan(first), total, first))

    return np.asarray(jax.vmap(member)(keys, agent))


@pytest.mark.parametrize("backend", ["compiled", "host"])
def test_cemrl_first_generation_fitness_comes_from_the_sampled_actors(tmp_path, monkeypatch, backend):
    """Learning starts after the first generation, yet its actors act (deterministically, with their own
    parameters) from the first step, and the CEM is told their returns, not those of random actions."""
    if backend == "compiled":
        setup = prepare(small_config(tmp_path, "cemrl", "first", envs_per_member=2, learning_starts=500))
        population = init_population(setup)
        keys = jnp.copy(jax.random.key_data(population.key))  # the chunk consumes (donates) its input
        population, metrics = setup.backend.advance(population, 0)
        expected = sampled_actor_returns(setup, jax.random.wrap_key_data(keys), population.agent, 200)
        np.testing.assert_allclose(np.asarray(metrics["fitness"]), expected, rtol=1e-4)
        return
    recorder = host_cemrl(tmp_path, monkeypatch, "first", learning_starts=500, total_steps=200)
    end, actors, fitness = recorder.credits[0]
    assert all(greedy.all() for greedy in recorder.greedy[:end])  # every action the actor's own
    for member in range(2):
        first = recorder.episodes(member, 0)[0]
        assert first[:2] == (0, 199) and {recorder.actors[t][member] for t in range(200)} == {actors[member]}
        assert fitness[member] == pytest.approx(first[2], rel=1e-5)


def test_dvd_per_member_critics_fold_each_members_batch_with_its_own_gamma(tmp_path):
    """--n-step 3, gammas 0.5 and 0.9, per-member critics: each member's TD target is, by hand,
    r_t + g r_{t+1} + g^2 r_{t+2} + g^3 min Q'(s_{t+3}, pi'(s_{t+3})) with its own g (target noise 0)."""
    from populax.agents import AgentSpec, get_algorithm
    from populax.agents.base import Transition
    from populax.agents.options import resolve_options
    from populax.buffers import buffer_add, buffer_init
    from populax.coupled.shared_td3 import stack_one, td_targets
    from populax.loop.coupled import make_dvd_steps
    from populax.member import take_rows

    config = small_config(tmp_path, "dvd-td3", "gammas", pop=2, n_step=3, algo_options=PER_MEMBER,
                          hp={"gamma": "0.5,0.9", "target-noise": "0"})
    setup = prepare(config)
    algorithm = get_algorithm("dvd-td3")
    options = resolve_options(algorithm.options, config.algo_options, "dvd-td3")
    nets = algorithm.make(AgentSpec((3,), setup.backend.env.action, config.hidden, options))
    steps = make_dvd_steps(config, nets, options)
    agent = init_population(setup).agent
    # Two members' shards of one 30-step episode each: observation (member, t, 0), reward 1 + t / 10.
    buffers = []
    for member in range(2):
        t = np.arange(31, dtype=np.float32)
        obs = np.stack([np.full(31, member), t, np.zeros(31)], axis=1).astype(np.float32)
        rows = Transition(obs[:-1], np.zeros((30, 1), np.float32), 1 + t[:-1] / 10, obs[1:], np.zeros(30, np.float32))
        buffers.append(buffer_add(buffer_init(jax.tree.map(lambda x: x[0], rows), 30), jax.tree.map(jnp.asarray, rows)))
    experience = jax.tree.map(lambda *x: jnp.stack(x), *buffers)
    batches = steps.sample_batches(experience, jax.random.key(1), setup.hparams)
    for member, gamma in enumerate((0.5, 0.9)):
        batch = take_rows(batches, member)
        t = np.asarray(batch.obs[:, 1])
        horizon = np.minimum(3, 30 - t)  # the fold stops at the newest stored row
        by_hand = sum(np.where(j < horizon, gamma**j * (1 + (t + j) / 10), 0.0) for j in range(3))
        target_actor, critic_target = take_rows(agent.actor_target, member), take_rows(agent.critic.critic_target, member)
        next_obs = np.asarray(batch.next_obs)
        q1, q2 = nets.critic.apply(critic_target, next_obs, nets.actor.apply(target_actor, next_obs))
        expected = by_hand + gamma**horizon * np.minimum(np.asarray(q1), np.asarray(q2))
        got = td_targets(nets, critic_target, stack_one(target_actor), stack_one(batch), jax.random.key(2),
                         take_rows(setup.hparams, member))[0]
        np.testing.assert_array_equal(np.asarray(batch.horizon), horizon)
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("env", ["Pendulum-v1", pytest.param("gymnasium:Pendulum-v1", marks=pytest.mark.extended)])
def test_cemrl_runs_when_gradient_steps_are_not_a_multiple_of_pop(tmp_path, env):
    """pop 4, 5-step generations, 0.3 updates per step: 6 gradient steps per generation (used to fail to
    reshape into [-1, 4]); the one shared critic reports one loss, the same for every member."""
    config = small_config(tmp_path, "cemrl", "steps", env=env, total_steps=25, learning_starts=5, batch_size=8,
                          updates_per_step=0.3, algo_options={"generation-steps": 5})
    result = run(prepare(config))
    # Gradient phases begin generations 2-4 (once env steps exceed learning-starts).
    assert result.summary["env_steps_per_member"] == 25 and int(result.population.shared.critic.updates) == 3 * 6
    for step in (15, 20, 25):
        losses = [(r["critic_loss"], r["q_mean"]) for m in range(4) for r in records(result.run_dir, m)
                  if r["env_step"] == step]
        assert len(losses) == 4 and len(set(losses)) == 1 and np.isfinite(losses[0]).all(), losses


def test_union_sample_draws_members_in_proportion_to_their_valid_rows():
    """Shards holding 0, 10 and 30 rows: no draw from the empty one, three times as many from the fuller one,
    and every row drawn is one of its member's valid rows."""
    from populax.agents.base import Transition
    from populax.buffers import ReplayBuffer
    from populax.coupled.shared_td3 import union_sample

    sizes = jnp.array([0, 10, 30], jnp.int32)
    rows = jnp.arange(3 * 40, dtype=jnp.float32).reshape(3, 40)  # value = member * 40 + row
    data = Transition(rows[..., None], rows[..., None], rows, rows[..., None], jnp.zeros((3, 40)))
    batch = union_sample(ReplayBuffer(data=data, position=sizes, size=sizes), jax.random.key(0), 4000)
    member, row = np.divmod(np.asarray(batch.reward).astype(int), 40)
    counts = np.bincount(member, minlength=3)
    assert counts[0] == 0 and 2.6 < counts[2] / counts[1] < 3.4, counts
    assert (row < np.asarray(sizes)[member]).all()


def test_bandit_follows_the_reference_feedback_window_and_uniform_start():
    """Against a plain re-derivation of the reference's rule: iteration i's feedback compares its mean return
    with the best of iterations i-6 .. i-2, is 1 / 0 / 1/2 (above, below, tie) and exists from i = 7; only the
    last `window` feedbacks count; the first 5 choices are uniform."""
    rng = np.random.default_rng(0)
    returns = rng.normal(size=40).round(1)
    returns[20] = returns[14:19].max()  # a tie with the comparison's best: feedback 1/2
    window, arms = 8, 2
    step = jax.jit(dvd.bandit_step, static_argnums=4)
    bandit, used, choices = dvd.bandit_init(window=window), [], []
    for i, value in enumerate(returns):
        arm = int(bandit.arm)
        used.append(arm)
        bandit = step(bandit, jnp.float32(value), jnp.bool_(True), jax.random.key(i), arms)
        choices.append(int(bandit.arm))
        scored = [(used[j], np.sign(returns[j] - returns[j - 6:j - 1].max()) / 2 + 0.5)
                  for j in range(len(used)) if j >= 6 and used[j] >= 0]  # j: 0-based, the reference's i = j + 1
        scored = scored[-window:]
        alpha = [1 + sum(s for a, s in scored if a == k) for k in range(arms)]
        beta = [1 + sum(1 - s for a, s in scored if a == k) for k in range(arms)]
        np.testing.assert_allclose(dvd.posteriors(bandit, arms), (alpha, beta))
    # The first 5 choices: uniform draws (key i's), whatever the posteriors say.
    for i in range(5):
        assert choices[i] == int(jax.random.randint(jax.random.split(jax.random.key(i))[1], (), 0, arms))
    warm = step(dvd.bandit_init(), jnp.float32(0.0), jnp.bool_(False), jax.random.key(0), arms)
    assert int(warm.arm) == -1 and int(warm.choices) == 0 and int(warm.seen) == 1


@pytest.mark.extended  # a long run; make test-extended and CI run it (the full DvD Pendulum recipe; the bandit's steps are tested above)
def test_dvd_bandit_keeps_choosing_both_arms_late_in_the_pendulum_recipe(tmp_path):
    """The DvD Pendulum recipe (seed 0; one evaluation episode, which does not touch training): both lambdas
    are still chosen in the second half of the run, by Thompson sampling (the first 5 choices are uniform).
    (Rewarded only for beating the best return ever seen, the old bandit chose lambda 0 from the third
    round to the end of this run.)"""
    from populax.cli import parse_train_args

    config = parse_train_args(["--config", "configs/dvd-td3-Pendulum-v1.yaml", "--eval-episodes", "1",
                               "--out", str(tmp_path / "dvd"), "--no-progress", "--no-tensorboard"])
    result = run(prepare(config))
    arms = [int(r["bandit_arm"]) for r in records(result.run_dir)]  # the arm chosen at each chunk's end
    assert len(arms) == 10 and set(arms[5:]) == {0, 1}, arms


def test_a_dvd_checkpoint_with_the_old_bandit_resumes_with_a_fresh_one(tmp_path):
    """A DvD run checkpointed before issue 22 (bandit: alpha, beta, arm, best) resumes: its bandit starts afresh
    (nothing seen, no arm), everything else as saved."""
    import hashlib

    from flax import serialization

    from populax.run.checkpoint import STATE_FILE

    result = run(prepare(small_config(tmp_path, "dvd-td3", "old", checkpoint_every=200, keep_checkpoints=5)))
    first = list_checkpoints(result.run_dir)[0]
    for path in list_checkpoints(result.run_dir)[1:]:
        shutil.rmtree(path)
    payload = serialization.msgpack_restore((first / STATE_FILE).read_bytes())
    payload["population"]["shared"]["bandit"] = {"alpha": np.ones(2, np.float32), "beta": np.full(2, 3, np.float32),
                                                 "arm": np.int32(1), "best": np.float32(-100)}
    data = serialization.msgpack_serialize(payload)
    (first / STATE_FILE).write_bytes(data)
    manifest = json.loads((first / "manifest.json").read_text())
    manifest.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (first / "manifest.json").write_text(json.dumps(manifest))
    resumed = resume(result.run_dir)
    bandit = resumed.population.shared.bandit
    assert int(bandit.seen) == 2 and int(bandit.choices) == 2 and int(bandit.arm) in (0, 1)  # the 2 chunks after it
    assert resumed.summary["env_steps_per_member"] == 600 and np.isfinite(resumed.returns).all()
