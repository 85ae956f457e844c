"""Population scaling: vmap on 1 device vs sharded on 2 forced CPU devices vs Ray with 2 workers (issue 13).

Every cell is a whole ``populax train`` run of TD3-PBT on gymnax Pendulum-v1
in its own process (XLA fixes its device count once per process; Ray runs in
a network namespace holding only ``lo``, so nothing leaves 127.0.0.1). The
throughput of a run is its steady state: env steps of all members per second
between the end of its first chunk (compilation) and its last one, read from
metrics.jsonl, so compilation and Ray's start are left out. For Ray the run's
ray.jsonl gives the bytes and milliseconds of every transfer, the exploit
pushes among them. Cells run one after the other, population by population,
so a noisy machine hits each executor alike; the ratios are the numbers.

    .venv/bin/python benchmarks/scaling.py --pops 8,16,32 --steps 3000 --out docs/bench/scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXECUTORS = ("vmap", "sharded", "ray")


def train_args(pop: int, executor: str, steps: int, chunk: int, hidden: str, out: Path) -> list[str]:
    """The CLI arguments of one cell."""
    args = ["--env", "Pendulum-v1", "--algo", "td3", "--pop", str(pop), "--total-steps", str(steps),
            "--eval-every", str(chunk), "--eval-episodes", "1", "--learning-starts", "0", "--hidden", hidden,
            "--strategy", "pbt", "--hp.lr-actor", "loguniform:1e-4,1e-2", "--checkpoint-every", str(steps),
            "--no-recipe", "--no-progress", "--no-tensorboard", "--executor", executor, "--out", str(out)]
    return args + (["--workers", "2"] if executor == "ray" else [])


def run_cell(pop: int, executor: str, args: argparse.Namespace, root: Path) -> dict:
    """Train one cell; its steady-state throughput and, for Ray, its traffic."""
    out = root / f"{executor}-{pop}"
    devices = 2 if executor == "sharded" else 1
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    argv = [sys.executable, "-m", "populax.cli", "train", *train_args(pop, executor, args.steps, args.chunk, args.hidden, out)]
    if executor == "ray":
        argv = ["unshare", "-n", "sh", "-c", "ip link set lo up; exec " + shlex.join(argv)]
    subprocess.run(argv, check=True, env=env, capture_output=True, timeout=3600)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    members = [r for r in records if "member" in r]
    first, last = members[0], members[-1]
    steps = pop * (last["env_step"] - first["env_step"])
    cell = {"pop": pop, "executor": executor, "steady_env_steps_per_s": steps / (last["wall_time_s"] - first["wall_time_s"]),
            "wall_s": json.loads((out / "summary.json").read_text())["wall_time_s"]}
    if executor == "ray":
        cell["traffic"] = ray_traffic(out / "ray.jsonl")
    return cell


def ray_traffic(path: Path) -> dict:
    """Per chunk and per copy between blocks: bytes and milliseconds, from ray.jsonl."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    chunks = [r for r in records if r["event"] == "chunk"][1:]  # the first holds compilation; ms: the whole call
    copies = [r for r in records if r["event"] == "member_copy"]
    rounds = [r for r in records if r["event"] == "chunk" and r["edited"]]  # the first round also compiles the edit
    gathers = [r for r in records if r["event"] == "gather"]
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {
        "chunk_bytes": mean([r["bytes"] for r in chunks]), "chunk_ms": mean([r["ms"] for r in chunks]),
        "chunk_member_state_bytes": [r["member_state_bytes"] for r in chunks],
        "copy_bytes_per_member": mean([r["bytes"] / len(r["sources"]) for r in copies]),
        "cross_block_sources": sum(len(r["sources"]) for r in copies),
        "edit_rounds_ms": [r["edit_ms"] for r in rounds], "edit_rounds_members": [r["edited"] for r in rounds],
        "checkpoint_gather_bytes": mean([r["bytes"] for r in gathers]), "checkpoint_gather_ms": mean([r["ms"] for r in gathers]),
    }


def main() -> None:
    """Run every cell, print throughputs with ratios to vmap, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pops", default="8,16,32")
    parser.add_argument("--steps", type=int, default=3000, help="env steps per member")
    parser.add_argument("--chunk", type=int, default=500, help="env steps per member per chunk (PBT round every 2)")
    parser.add_argument("--hidden", default="64,64")
    parser.add_argument("--executors", default=",".join(EXECUTORS))
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()
    cells = []
    with tempfile.TemporaryDirectory() as root:
        for pop in map(int, args.pops.split(",")):
            for executor in args.executors.split(","):
                cell = run_cell(pop, executor, args, Path(root))
                cells.append(cell)
                print(json.dumps(cell), flush=True)
    print(f"\n{'pop':>4} " + " ".join(f"{e:>18}" for e in args.executors.split(",")) + "   (env steps/s, ratio to vmap)")
    for pop in map(int, args.pops.split(",")):
        row = {c["executor"]: c["steady_env_steps_per_s"] for c in cells if c["pop"] == pop}
        base = row.get("vmap")
        print(f"{pop:>4} " + " ".join(f"{row[e]:>10.0f} ({row[e] / base if base else float('nan'):.2f}x)"
                                       for e in args.executors.split(",")))
    if args.out:
        Path(args.out).write_text(json.dumps({"command": " ".join(sys.argv), "cells": cells}, indent=2))


if __name__ == "__main__":
    main()
