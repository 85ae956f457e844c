"""The Python API: a config in code, a callback that watches the population after every chunk, the result, and
the best member as a plain function played in a Gymnasium environment.

    python examples/python_api.py

``populax.train(config, on_chunk=...)`` calls ``on_chunk(progress)`` after every chunk (one evaluation period):
``progress.env_steps`` (per member so far), ``progress.total_steps``, ``progress.best_return`` (the best member's
return at this chunk's evaluation, not a running maximum). The returned
``TrainResult`` holds every member's final state (``population``), final returns, the run directory and the
content of summary.json; the run directory has metrics.jsonl, TensorBoard files, checkpoints and a report.
``populax.load_policy(run_dir)`` reads the best member back from its checkpoint as ``obs -> action``;
``policy.make_env()`` is gymnax Pendulum-v1's Gymnasium twin (same dynamics, observations and actions).
"""

import argparse

from populax import TrainConfig, load_policy, train


def main() -> None:
    """Train 4 TD3 members on gymnax Pendulum-v1 with a learning-rate spread, printing progress as it goes."""
    parser = argparse.ArgumentParser(description="populax's Python API with a progress callback")
    parser.add_argument("--steps", type=int, default=10_000, help="env steps per member")
    parser.add_argument("--out", default="runs/example-python-api")
    args = parser.parse_args()

    config = TrainConfig(env="Pendulum-v1", algo="td3", pop=4, total_steps=args.steps, eval_every=args.steps // 5,
                         learning_starts=min(1_000, args.steps // 5),  # a short --steps learns too
                         hidden=(64, 64), hp={"lr-actor": [3e-4, 1e-3, 3e-3, 1e-2]}, out=args.out, force=True,
                         progress=False, tensorboard=False)
    seen = []

    def watch(progress) -> None:
        seen.append(progress.env_steps)
        print(f"{progress.env_steps:>7,} / {progress.total_steps:,} steps per member, best return this evaluation "
              f"{progress.best_return:8.1f}")

    result = train(config, on_chunk=watch)
    best = int(result.summary["best_member"])
    print(f"{len(seen)} chunks; best member {best} (lr-actor {config.hp['lr-actor'][best]:g}) returned "
          f"{result.returns[best]:.1f}; run directory {result.run_dir}")

    policy = load_policy(result.run_dir)  # the best member, from the run's newest checkpoint
    env = policy.make_env()
    obs, _ = env.reset(seed=0)
    total, steps, done = 0.0, 0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy(obs))
        total, steps, done = total + float(reward), steps + 1, terminated or truncated
    print(f"member {policy.member} played one Gymnasium episode: return {total:.1f} in {steps} steps")


if __name__ == "__main__":
    main()
