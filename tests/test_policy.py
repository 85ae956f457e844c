"""`populax.load_policy`: a saved member as a function from observations to environment actions, on both kinds
of environment, with `--obs-norm`, for mixed-shape PBT populations; and `populax eval` choosing the best member.

The checks replay the run's own evaluation outside populax: a policy that ignored the member's observation
statistics, handed the agent's [-1, 1] actions to the environment unscaled, or took another member's
parameters would score differently from what metrics.jsonl logged."""

import json

import gymnasium
import jax
import numpy as np
import pytest
from custom_envs import Reach

import populax
from populax.backends.host.collector import eval_seed
from populax.cli import main
from populax.run.resume import evaluate_saved_member


def last_returns(run_dir) -> dict[int, float]:
    """Each member's return at the run's last evaluation, from metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = max(r["env_step"] for r in records)
    return {r["member"]: r["return"] for r in records if r["env_step"] == last}


def train(out, **settings) -> populax.TrainResult:
    """A short off-policy run with --obs-norm (every test here reads its statistics)."""
    config = dict(algo="td3", pop=3, total_steps=800, eval_every=400, eval_episodes=2, hidden=(32, 32), seed=3,
                  learning_starts=100, batch_size=32, obs_norm=True, out=str(out), progress=False, tensorboard=False)
    return populax.train(populax.TrainConfig(**{**config, **settings}))


@pytest.fixture(scope="module")
def host_run(tmp_path_factory):
    return train(tmp_path_factory.mktemp("host") / "run", env="gymnasium:Pendulum-v1")


def test_a_host_policy_in_its_own_env_scores_the_logged_evaluation(host_run):
    """Gymnasium Pendulum (actions in [-2, 2]): every member, played in `policy.make_env()` with the env seeds of
    the run's last evaluation, scores exactly what metrics.jsonl logged for it."""
    run_dir = host_run.run_dir
    logged = last_returns(run_dir)
    config = host_run.summary
    for member in range(3):
        policy = populax.load_policy(run_dir, member=member)
        assert policy.member == member and policy.env_steps == 800
        assert policy.hparams == config["members"][member]["hparams"]
        env = policy.make_env()
        totals = []
        for episode in range(2):  # the run's evaluation after its last chunk: env seeds eval_seed + member * 2 + j
            obs, _ = env.reset(seed=eval_seed(3, 1) + member * 2 + episode)
            total, done = 0.0, False
            while not done:
                action = policy(obs)
                assert action.shape == (1,) and -2.0 <= float(action[0]) <= 2.0
                obs, reward, terminated, truncated, _ = env.step(action)
                total, done = total + float(reward), terminated or truncated
            totals.append(total)
        np.testing.assert_allclose(np.mean(totals), logged[member], rtol=1e-5)
        assert policy.last_return == pytest.approx(logged[member], rel=1e-6)


def test_the_default_member_is_the_best_and_eval_reports_it(host_run, capsys):
    """No member named: `load_policy` and `populax eval` take summary.json's best member; a batch of
    observations gets the actions of each one."""
    run_dir, best = host_run.run_dir, host_run.summary["best_member"]
    assert sorted(host_run.returns)[-1] > sorted(host_run.returns)[0]  # the choice means something
    policy = populax.load_policy(run_dir)
    assert policy.member == best and policy.last_return == pytest.approx(host_run.summary["best_return"])
    env = gymnasium.vector.SyncVectorEnv([policy.make_env for _ in range(3)])
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(policy.batch(obs), np.stack([policy(o) for o in obs]), rtol=1e-5, atol=1e-6)
    env.close()
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--episodes", "2", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"member {best} (the best of the last evaluation; chunk_")
    named = evaluate_saved_member(run_dir, best, 2, seed=5)
    assert f"mean return {named.returns.mean():.2f}" in out


def test_a_compiled_policy_steps_its_jax_env_as_the_run_did(tmp_path):
    """A user's JAX environment with action bounds [0, 4], deterministic episodes: each member's actions, fed to
    the environment's own `step` outside populax, score the return the run's evaluation logged."""
    result = train(tmp_path / "run", env=Reach())
    logged = last_returns(result.run_dir)
    env = Reach()
    params = env.default_params
    for member in range(3):
        policy = populax.load_policy(result.run_dir, member=member)
        obs, state = env.reset(jax.random.key(0), params)
        total, done, actions = 0.0, False, []
        while not done:
            action = policy(np.asarray(obs))
            actions.append(float(action[0]))
            obs, state, reward, terminated, truncated, _ = env.step(jax.random.key(1), state, action, params)
            total, done = total + float(reward), bool(terminated or truncated)
        assert len(actions) == params.max_steps_in_episode and all(0.0 <= a <= 4.0 for a in actions)
        np.testing.assert_allclose(total, logged[member], rtol=1e-4)
    with pytest.raises(populax.ConfigError, match="make_env: the JAX environment .* has no Gymnasium twin"):
        policy.make_env()


def test_a_mixed_shape_pbt_member_of_a_gymnax_run(tmp_path):
    """DQN, networks of two widths, PBT: each member's policy is its cohort's network, with the hyperparameters
    and static settings summary.json records; the gymnax CartPole policy acts in its Gymnasium twin."""
    result = train(tmp_path / "run", env="CartPole-v1", algo="dqn", pop=4, total_steps=1200, eval_every=300,
                   strategy="pbt", ready_interval=600, obs_norm=False,
                   hp={"hidden": "choice:16x16,32x32", "lr": "loguniform:1e-4,1e-3"})
    members = result.summary["members"]
    cohorts = set()
    for member in range(4):
        policy = populax.load_policy(result.run_dir, member=member)
        assert policy.hparams == members[member]["hparams"]
        assert policy.cohort is not None and "hidden=" + members[member]["static"]["hidden"] in policy.cohort
        cohorts.add(policy.cohort)
        env = policy.make_env()
        obs, _ = env.reset(seed=member)
        action = policy(obs)
        assert action.shape == () and int(action) in (0, 1)
        env.step(int(action))
    assert len(cohorts) == 2


def test_mistakes_are_named_in_one_line(host_run, tmp_path):
    with pytest.raises(populax.ConfigError, match="--member must be between 0 and 2"):
        populax.load_policy(host_run.run_dir, member=3)
    with pytest.raises(populax.ConfigError, match="is not a populax run directory"):
        populax.load_policy(tmp_path)


def test_eval_of_every_member_ranks_them_and_replays_the_logged_evaluation(host_run, capsys):
    """`populax eval --member all` with the run's own evaluation episodes: each member's mean is the return the
    run logged for it (the last column), the rows are ranked by it, and the top one is summary.json's best."""
    capsys.readouterr()
    assert main(["eval", str(host_run.run_dir), "--member", "all", "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]
    assert [int(row[0]) for row in rows] == [1, 2, 3]
    logged = last_returns(host_run.run_dir)
    for _, member, mean, _, last in rows:
        assert mean == last == f"{logged[int(member)]:.2f}"
    means = [float(row[2]) for row in rows]
    assert means == sorted(means, reverse=True) and int(rows[0][1]) == host_run.summary["best_member"]
    assert f"best over these 2 episodes: member {rows[0][1]}" in out
