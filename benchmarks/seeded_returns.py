"""Seeded final returns of a small matrix of runs (every family x both backends), as JSON.

A refactor of the member loop must leave these unchanged: run it before and after and compare.

    python benchmarks/seeded_returns.py --out /tmp/before.json
    python benchmarks/seeded_returns.py --out /tmp/after.json --compare /tmp/before.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

CASES = {
    # name: (env, algo, extra TrainConfig fields)
    "td3-compiled": ("Pendulum-v1", "td3", {}),
    "sac-compiled": ("Pendulum-v1", "sac", {}),
    "dqn-compiled": ("CartPole-v1", "dqn", {"n_step": 3}),
    "ppo-compiled": ("CartPole-v1", "ppo", {}),
    "ppo-compiled-cont": ("Pendulum-v1", "ppo", {}),
    "cemrl-compiled": ("Pendulum-v1", "cemrl", {}),
    "dvd-compiled": ("Pendulum-v1", "dvd-td3", {}),
    "td3-host": ("gymnasium:Pendulum-v1", "td3", {"obs_norm": True}),
    "sac-host": ("gymnasium:Pendulum-v1", "sac", {}),
    "dqn-host": ("gymnasium:CartPole-v1", "dqn", {"n_step": 3}),
    "ppo-host": ("gymnasium:CartPole-v1", "ppo", {"obs_norm": True}),
    "cemrl-host": ("gymnasium:Pendulum-v1", "cemrl", {}),
    "dvd-host": ("gymnasium:Pendulum-v1", "dvd-td3", {}),
}


def run_case(name: str, root: Path) -> list[float]:
    """Final returns of one case (4 members, 2 chunks, seeded)."""
    from populax import TrainConfig, train

    env, algo, extra = CASES[name]
    fields = dict(env=env, algo=algo, pop=4, total_steps=1_600, eval_every=800, learning_starts=200,
                  batch_size=32, hidden=(16, 16), envs_per_member=2, eval_episodes=2, seed=3,
                  out=str(root / name), force=True, progress=False, tensorboard=False)
    if env.startswith("gymnasium:"):
        fields["overlap"] = False  # collector and learner alternate: a host run is reproducible only so
    fields.update(extra)
    result = train(TrainConfig(**fields))
    return [float(r) for r in result.returns]


def main() -> None:
    """Run the cases, write JSON, optionally compare with an earlier file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--compare", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        returns = {name: run_case(name, Path(tmp)) for name in args.cases.split(",")}
    Path(args.out).write_text(json.dumps(returns, indent=1))
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        changed = [n for n in returns if n in before and before[n] != returns[n]]
        for name in returns:
            print(f"{name:20s} {'CHANGED' if name in changed else 'same   '} {returns[name]}"
                  + (f"  was {before.get(name)}" if name in changed else ""))
        sys.exit(1 if changed else 0)


if __name__ == "__main__":
    main()
