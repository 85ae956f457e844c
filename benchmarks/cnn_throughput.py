"""MinAtar Breakout DQN and PPO training throughput at several population sizes, flax's convolution vs populax's
(issue 15): `benchmarks/throughput.py` run twice in one process, once with each convolution.

    python benchmarks/cnn_throughput.py [--pops 1,8] [--algos dqn,ppo] [--rounds 3] [--chunk-steps 1000]
"""

from __future__ import annotations

import argparse
import functools
import sys

import flax.linen

from populax.agents import nets
from populax.devices import use_all_cores


def main() -> None:
    """Print throughput.py's table for each algorithm and convolution."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pops", default="1,8")
    parser.add_argument("--algos", default="dqn,ppo")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk-steps", type=int, default=1000)
    args = parser.parse_args()
    use_all_cores()
    sys.path.insert(0, "benchmarks")
    import throughput

    canonical = nets.Conv
    for algo in args.algos.split(","):
        for conv, module in (("xla (flax nn.Conv, before)", functools.partial(flax.linen.Conv, padding="VALID")),
                             ("canonical (populax Conv, after)", canonical)):
            nets.Conv = module
            print(f"## {algo} Breakout-MinAtar, convolution: {conv}", flush=True)
            sys.argv = ["throughput.py", "--algo", algo, "--env", "Breakout-MinAtar", "--pops", args.pops,
                        "--rounds", str(args.rounds), "--chunk-steps", str(args.chunk_steps)]
            throughput.main()


if __name__ == "__main__":
    main()
