"""What a mixed-shape population costs (issue 25), measured side by side in one process.

TD3 on gymnax Pendulum-v1, 8 members, 1000 env steps per chunk:

* **chunk time**: one population of one shape (every member at the wide width) against the same members split
  into two cohorts (half narrow, half wide): two programs per chunk instead of one;
* **a move between cohorts**: ``apply_edits`` of one PBT exploit that moves a member from the narrow to the wide
  cohort, by each ``--pbt-cross-cohort`` mode (copy where the shapes match: a batch-size move; distill and fresh
  across widths), the first time (a new (cohort, size): its program compiles at the next chunk, timed there) and
  again at a size seen before (the cached program);
* **memory**: the members' state bytes as cohorts hold them against padding every member to the widest shape
  (from the shapes: exact, not timed).

    .venv/bin/python benchmarks/cohort_costs.py --out docs/bench/cohort_costs.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from populax.edits import no_edits
from populax.memory import tree_bytes
from populax.run.config import build_config
from populax.runtime.setup import init_population, prepare


def make_setup(hp: dict, out: Path, **settings):
    """A prepared, initialised and started 8-member TD3 run on Pendulum (nothing written)."""
    config = build_config([dict(env="Pendulum-v1", algo="td3", pop=8, total_steps=100_000, eval_every=1000,
                                eval_episodes=2, learning_starts=200, batch_size=64, buffer_size=20_000, seed=0,
                                hp=hp, out=str(out), progress=False, tensorboard=False, **settings)])
    setup = prepare(config)
    view = init_population(setup)
    setup.backend.start(view)
    return setup, view


def timed_chunks(setup, view, first: int, count: int) -> tuple[object, list[float]]:
    """Seconds of ``count`` chunks from chunk ``first`` (each waited for)."""
    seconds = []
    for chunk in range(first, first + count):
        begin = time.perf_counter()
        view, metrics = setup.backend.advance(view, chunk)
        jax.block_until_ready(metrics)
        seconds.append(time.perf_counter() - begin)
    return view, seconds


def move(setup, view, target: int, source: int, cohorts: list[int]) -> float:
    """Seconds of one exploit ``target`` <- ``source`` that puts the members in ``cohorts``."""
    edits = no_edits(view.hparams, len(cohorts)).replace(
        targets=np.array([target]), sources=np.array([source]), whole=np.array([True]), cohorts=np.array(cohorts))
    begin = time.perf_counter()
    view = setup.backend.apply_edits(view, view, edits)
    jax.block_until_ready(setup.backend.gather(view))
    return time.perf_counter() - begin


def chunk_costs(out: Path, narrow: str, wide: str, repeats: int) -> dict:
    """Steady chunk seconds of one shape (all wide) vs two cohorts (half narrow, half wide)."""
    result = {}
    for name, hidden in (("one shape", wide), ("two cohorts", ",".join([narrow] * 4 + [wide] * 4))):
        setup, view = make_setup({"hidden": hidden}, out / name.replace(" ", "_"))
        view, _ = timed_chunks(setup, view, 0, 1)  # compile
        _, seconds = timed_chunks(setup, view, 1, repeats)
        result[name] = {"median_chunk_s": float(np.median(seconds)), "chunks": seconds}
    return result


def move_costs(out: Path, narrow: str, wide: str) -> dict:
    """Seconds of a move narrow -> wide by each mode, first time and at a size seen before, and the next
    chunk's seconds (the first of a new size compiles its program)."""
    result = {}
    for mode, hp in (("copy", {"batch-size": "32,32,32,32,64,64,64,64", "hidden": wide}),
                     ("distill", {"hidden": ",".join([narrow] * 4 + [wide] * 4)}),
                     ("fresh", {"hidden": ",".join([narrow] * 4 + [wide] * 4)})):
        setup, view = make_setup(hp, out / mode, pbt_cross_cohort=mode)
        view, _ = timed_chunks(setup, view, 0, 2)
        row = {}
        # member 0 joins the second cohort (5 members: a new size), then member 0 goes back and member 1 moves
        # (sizes 4 and 4, then 3 and 5 again: programs seen before)
        steps = [("new size", 0, 7, [1, 0, 0, 0, 1, 1, 1, 1]), ("back", 0, 1, [0, 0, 0, 0, 1, 1, 1, 1]),
                 ("seen size", 1, 7, [0, 1, 0, 0, 1, 1, 1, 1])]
        for chunk, (name, target, source, cohorts) in enumerate(steps, start=2):
            seconds = move(setup, view, target, source, cohorts)
            view, (after,) = timed_chunks(setup, view, chunk, 1)
            row[name] = {"move_s": seconds, "next_chunk_s": after}
        row["programs"] = setup.backend.summary()["cohorts"]["programs"]
        row["moves"] = setup.backend.summary()["cohorts"]["moves"]
        result[mode] = row
    return result


def memory(out: Path, narrow: str, wide: str) -> dict:
    """State bytes of 4 narrow + 4 wide members as cohorts, against all 8 at the wide shape (padding)."""
    setup, _ = make_setup({"hidden": ",".join([narrow] * 4 + [wide] * 4)}, out / "memory")
    backend = setup.backend
    cohorts = sum(4 * tree_bytes(backend.template(c)) for c in range(2))
    padded = 8 * tree_bytes(backend.template(1))
    agents = sum(4 * tree_bytes(backend.template(c).agent) for c in range(2))
    return {"cohorts_bytes": cohorts, "padded_bytes": padded, "agents_bytes_cohorts": agents,
            "agents_bytes_padded": 8 * tree_bytes(backend.template(1).agent)}


def main() -> None:
    """Run every measurement, print and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--narrow", default="64x64")
    parser.add_argument("--wide", default="256x256")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        record = {"narrow": args.narrow, "wide": args.wide, "devices": [str(d) for d in jax.devices()],
                  "chunk": chunk_costs(out, args.narrow, args.wide, args.repeats),
                  "move": move_costs(out, args.narrow, args.wide),
                  "memory": memory(out, args.narrow, args.wide)}
    print(json.dumps(record, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()

