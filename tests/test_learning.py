"""Learning thresholds from the issues (seeded; small networks to stay fast)."""

import numpy as np

import populax


def test_td3_population_learns_pendulum(tmp_path):
    """TD3, population 4, gymnax Pendulum-v1: median final return >= -300 within
    20k env steps per member. Uses --hidden 64,64 (the issue allows it)."""
    config = populax.TrainConfig(
        env="Pendulum-v1", algo="td3", pop=4, total_steps=20_000, eval_every=5_000,
        hidden=(64, 64), seed=0, out=str(tmp_path / "run"), progress=False, tensorboard=False,
    )
    result = populax.train(config)
    assert result.returns.shape == (4,)
    assert np.median(result.returns) >= -300, result.returns
