"""The results table of record (issue 15): each algorithm on a fixed set of tasks, three seeds, population 4.

    python benchmarks/record.py                                   # every row (hours on a 2-core CPU)
    python benchmarks/record.py --cases dqn:CartPole-v1,ppo:CartPole-v1
    python benchmarks/record.py --cases sac:Pendulum-v1 --budget 0.25   # a quarter of each row's budget

Each case runs ``populax.train`` with the tuned recipe of (algo, env) when
there is one (else the settings listed in ``CASES``), population 4, seeds 0,
1 and 2. The population-method demos (``configs/demo.yaml``, the PBT, CEM-RL
and DvD recipes) run as shipped: their own population size and strategy.
Results accumulate in ``benchmarks/results/record.json`` (one entry
per case and budget, replaced when re-run) and the markdown table between the
markers in ``docs/results.md`` is rewritten from all entries, next to the
published reference numbers in ``REFERENCES`` (source cited per row). A row
whose mean is below its reference says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from populax.run.config import TrainConfig, build_config, load_recipe
from populax.run.recipes import recipe_layer, resolve_config_path

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "benchmarks" / "results" / "record.json"
DOC = ROOT / "docs" / "results.md"
BEGIN, END = "<!-- record:begin -->", "<!-- record:end -->"

BREAKOUT_RECIPE = {"recipe_of": "Breakout-MinAtar"}
MUJOCO = {"recipe_of": "none", "hidden": [256, 256], "learning_starts": 10_000, "eval_every": 10_000,
          "eval_episodes": 5, "total_steps": 100_000}
"""Reduced budget (the references train 1M steps); no recipe: the PBT recipes' hyperparameters are distributions."""
CASES: dict[str, dict[str, Any]] = {
    # name: settings over the recipe (or the defaults); "recipe_of" borrows another env's recipe.
    "td3:Pendulum-v1": {"total_steps": 20_000, "hidden": [256, 256]},
    "sac:Pendulum-v1": {"total_steps": 20_000},
    "td3:MountainCarContinuous-v0": {"total_steps": 50_000, "hidden": [256, 256]},
    "sac:MountainCarContinuous-v0": {"total_steps": 50_000, "hidden": [256, 256]},
    "dqn:CartPole-v1": {},
    "ppo:CartPole-v1": {},
    "dqn:Breakout-MinAtar": {},
    "ppo:Breakout-MinAtar": {},
    "dqn:SpaceInvaders-MinAtar": BREAKOUT_RECIPE,
    "ppo:SpaceInvaders-MinAtar": BREAKOUT_RECIPE,
    "td3:HalfCheetah-v5": MUJOCO,
    "sac:HalfCheetah-v5": MUJOCO,
    "td3:Hopper-v5": MUJOCO,
    "sac:Hopper-v5": MUJOCO,
    # The shipped population-method recipes, as a user runs them (`populax train --config NAME`).
    "td3-lr-spread:Pendulum-v1": {"config": "demo"},
    "td3-pbt:Pendulum-v1": {"config": "td3-pbt-Pendulum-v1"},
    "cemrl:Pendulum-v1": {"config": "cemrl-Pendulum-v1"},
    "dvd-td3:Pendulum-v1": {"config": "dvd-td3-Pendulum-v1"},
}

SB3 = "SB3 RL Zoo benchmark.md (DLR-RM/rl-baselines3-zoo), one run, deterministic evaluation"
GYMNAX = "gymnax README environment table (PPO agents of RobertTLange/gymnax-blines)"
REFERENCES: dict[str, list[tuple[str, float, str]]] = {
    # case: [(what, return, source)]
    "td3:Pendulum-v1": [("TD3, 20k steps", -151.9, SB3)],
    "sac:Pendulum-v1": [("SAC, 20k steps", -157.0, SB3)],
    "td3:MountainCarContinuous-v0": [("TD3, 300k steps", 93.5, SB3), ("PPO", 92.0, GYMNAX)],
    "sac:MountainCarContinuous-v0": [("SAC, 50k steps", 94.7, SB3), ("PPO", 92.0, GYMNAX)],
    "dqn:CartPole-v1": [("DQN, 50k steps", 500.0, SB3)],
    "ppo:CartPole-v1": [("PPO, 100k steps", 500.0, SB3), ("PPO", 500.0, GYMNAX)],
    "ppo:Breakout-MinAtar": [("PPO (budget not stated there; gymnax-blines trains millions of steps)", 28.0, GYMNAX)],
    "dqn:Breakout-MinAtar": [("PPO, for scale", 28.0, GYMNAX)],
    "ppo:SpaceInvaders-MinAtar": [("PPO (millions of steps)", 131.0, GYMNAX)],
    "dqn:SpaceInvaders-MinAtar": [("PPO, for scale", 131.0, GYMNAX)],
    "td3:HalfCheetah-v5": [("TD3, 1M steps, HalfCheetah-v3", 9655.7, SB3)],
    "sac:HalfCheetah-v5": [("SAC, 1M steps, HalfCheetah-v3", 9535.5, SB3)],
    "td3:Hopper-v5": [("TD3, 1M steps, Hopper-v3", 3606.4, SB3)],
    "sac:Hopper-v5": [("SAC, 1M steps, Hopper-v3", 2325.5, SB3)],
}


def case_config(case: str, seed: int, budget: float, out: Path):
    """The TrainConfig of one case and seed.

    An (algo, env) case: recipe (or borrowed recipe) < case settings < pop 4,
    seed, budget. A ``config`` case: that shipped config file as it is (its
    own algorithm, population size and strategy) < seed, budget.
    """
    algo, env = case.split(":")
    settings = dict(CASES[case])
    if "config" in settings:
        layer = load_recipe(resolve_config_path(settings.pop("config")))
        pop = layer["pop"]
    else:
        recipe_env = settings.pop("recipe_of", env)
        _, recipe = recipe_layer(algo, recipe_env)
        layer, pop = {**recipe, **settings, "algo": algo, "env": env}, 4
    total = int(layer.get("total_steps", 20_000) * budget)
    eval_every = min(int(layer.get("eval_every", TrainConfig().eval_every)), total)
    run = {"pop": pop, "seed": seed, "total_steps": total, "eval_every": eval_every, "out": str(out),
           "progress": False, "tensorboard": False}
    return build_config([layer, run])


def run_case(case: str, seeds: list[int], budget: float) -> dict[str, Any]:
    """Train the case once per seed; final member returns, env steps per member and wall time per seed."""
    import populax

    runs = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            config = case_config(case, seed, budget, Path(tmp) / "run")
            start = time.perf_counter()
            result = populax.train(config)
            runs.append({"seed": seed, "returns": [float(r) for r in result.returns],
                         "env_steps": int(result.summary["env_steps_per_member"]),
                         "mean_policy_return": result.summary.get("mean_policy_return"),  # CEM-RL's mean actor
                         "wall_s": time.perf_counter() - start})
        print(f"{case} seed {seed}: {runs[-1]['returns']}", flush=True)
    return {"case": case, "budget": budget, "runs": runs, "date": time.strftime("%Y-%m-%d")}


def table(entries: list[dict[str, Any]]) -> str:
    """The markdown table of every stored entry, with its references."""
    lines = ["| algo | env | pop | budget (env steps / member) | seeds | final return, mean +- std (all members) | "
             "per-seed medians | per-seed best | wall / seed (s) | reference (source) | vs reference |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: | --- | --- |"]
    for entry in sorted(entries, key=lambda e: (e["case"].split(":")[1], e["case"])):
        algo, env = entry["case"].split(":")
        returns = [r for run in entry["runs"] for r in run["returns"]]
        mean = statistics.fmean(returns)
        std = statistics.pstdev(returns)
        medians = ", ".join(f"{statistics.median(run['returns']):.1f}" for run in entry["runs"])
        bests = ", ".join(f"{max(run['returns']):.1f}" for run in entry["runs"])
        wall = statistics.fmean(run["wall_s"] for run in entry["runs"])
        refs = REFERENCES.get(entry["case"], [])
        ref_text = "; ".join(f"{value:g} ({what}; {source})" for what, value, source in refs) or "none collected"
        verdict = ("below" if mean < refs[0][1] - max(0.05 * abs(refs[0][1]), 1.0) else "at or above") if refs else "-"
        if refs and verdict == "below" and entry["runs"][0]["env_steps"] < 0.9 * reference_steps(refs[0][0]):
            verdict += " (smaller budget)"
        lines.append(f"| {algo} | {env} | {len(entry['runs'][0]['returns'])} | {entry['runs'][0]['env_steps']:,} | {len(entry['runs'])} | "
                     f"{mean:.1f} +- {std:.1f} | {medians} | {bests} | {wall:.0f} | {ref_text} | {verdict} |")
    return "\n".join(lines)


def reference_steps(what: str) -> float:
    """The reference's budget from its label ('TD3, 300k steps' -> 300000; unknown -> inf)."""
    for word in what.replace(",", " ").split():
        if word[-1] in "kM" and word[:-1].replace(".", "").isdigit():
            return float(word[:-1]) * (1e3 if word[-1] == "k" else 1e6)
    return float("inf")


def write_doc(entries: list[dict[str, Any]]) -> None:
    """Replace the table between the markers of docs/results.md."""
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{table(entries)}\n{END}{tail}")


def main() -> None:
    """Run the chosen cases, store them, rewrite the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated algo:env names of CASES")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budget", type=float, default=1.0, help="fraction of each case's env-step budget")
    parser.add_argument("--table-only", action="store_true", help="only rewrite docs/results.md from the store")
    args = parser.parse_args()
    from populax.devices import use_all_cores

    use_all_cores()
    entries = json.loads(STORE.read_text()) if STORE.exists() else []
    if not args.table_only:
        for case in args.cases.split(","):
            if case not in CASES:
                raise SystemExit(f"--cases: unknown case {case!r}; known: {', '.join(CASES)}")
            entry = run_case(case, [int(s) for s in args.seeds.split(",")], args.budget)
            # Re-read the store: another record.py may have added rows meanwhile (runs in parallel are fine).
            entries = json.loads(STORE.read_text()) if STORE.exists() else []
            entries = [e for e in entries if (e["case"], e["budget"]) != (case, args.budget)] + [entry]
            STORE.parent.mkdir(parents=True, exist_ok=True)
            STORE.write_text(json.dumps(entries, indent=1))
            write_doc(entries)
    write_doc(entries)


if __name__ == "__main__":
    main()
