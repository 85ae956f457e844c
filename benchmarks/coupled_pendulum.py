"""CEM-RL vs TD3 on gymnax Pendulum-v1 at the same total env-step budget and seeds (issue 12).

CEM-RL: a population of 10 actors, ``--total-steps`` per member (so 10x that in all).
TD3: one agent per seed trained on the same total number of env steps (the CEM-RL paper's comparison).
Both: (64, 64) networks, batch 100, learning rate 1e-3 (CEM-RL's defaults), 5,000 total warm-up steps.
Prints, per seed, the CEM mean policy's return and the best sampled actor's return per generation, and
TD3's evaluation return at the same total env steps.

    PYTHONPATH=. python benchmarks/coupled_pendulum.py --seeds 0 1 2 --steps-per-member 3000 --out /tmp/coupled-bench
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import populax
from populax.runtime import prepare, run


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def cemrl_curve(out: Path, seed: int, steps: int) -> list[tuple[int, float, float]]:
    """(total env steps, CEM mean return, best sampled actor's return) per generation."""
    config = populax.TrainConfig(env="Pendulum-v1", algo="cemrl", pop=10, total_steps=steps, eval_every=200,
                                 eval_episodes=5, hidden=(64, 64), batch_size=100, learning_starts=500, seed=seed,
                                 out=str(out / f"cemrl-{seed}"), force=True, progress=False, tensorboard=False)
    result = run(prepare(config))
    rows = records(result.run_dir)
    curve = []
    for step in sorted({r["env_step"] for r in rows if "member" in r}):
        at = [r for r in rows if r.get("env_step") == step and "member" in r]
        curve.append((10 * step, at[0]["mean_policy_return"], max(r["return"] for r in at)))
    return curve


def td3_curve(out: Path, seed: int, total: int) -> list[tuple[int, float]]:
    """(env steps, evaluation return) of one TD3 agent with the same total budget."""
    config = populax.TrainConfig(env="Pendulum-v1", algo="td3", pop=1, total_steps=total, eval_every=2_000,
                                 eval_episodes=5, hidden=(64, 64), batch_size=100, learning_starts=5_000, seed=seed,
                                 hp={"lr-actor": "1e-3", "lr-critic": "1e-3"}, out=str(out / f"td3-{seed}"),
                                 force=True, progress=False, tensorboard=False)
    result = run(prepare(config))
    return [(r["env_step"], r["return"]) for r in records(result.run_dir) if "member" in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps-per-member", type=int, default=3_000, help="CEM-RL env steps per actor")
    parser.add_argument("--out", type=Path, default=Path("/tmp/coupled-bench"))
    args = parser.parse_args()
    total = 10 * args.steps_per_member
    for seed in args.seeds:
        cem = cemrl_curve(args.out, seed, args.steps_per_member)
        td3 = dict(td3_curve(args.out, seed, total))
        print(f"seed {seed}: total env steps | CEM-RL mean policy | CEM-RL best actor | TD3")
        for step, mean, best in cem:
            if step % 4_000 == 0 or step == total:
                print(f"  {step:>6} | {mean:8.1f} | {best:8.1f} | {td3.get(step, float('nan')):8.1f}")
        last = [c[1] for c in cem[-5:]]
        print(f"  final: CEM-RL mean policy {cem[-1][1]:.1f} (last 5 generations {np.mean(last):.1f}), "
              f"best actor {cem[-1][2]:.1f}; TD3 {td3[max(td3)]:.1f}", flush=True)


if __name__ == "__main__":
    main()
