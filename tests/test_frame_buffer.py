"""Frame storage for stacked image observations (issue 15, Atari recipe's 1M buffer).

Every stack the buffer rebuilds must equal, bitwise, the one the env returned
for that transition: across episode starts, truncations (final observation),
life-loss terminals, the E envs of a member, the members, ring wrap-around and
a checkpoint round trip.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from populax.agents.base import STORED_FIELDS, Agent, Transition
from populax.backends.host.collector import Collector, collector_keys
from populax.backends.host.member import HostPlan, make_functions
from populax.buffers import (
    FrameBuffer,
    buffer_add,
    buffer_init,
    buffer_rewind_to,
    buffer_sample,
    buffer_size,
    buffer_without_transitions,
    frame_buffer_take,
    replay_init,
)
from populax.envs.host_envs import make_host_spec
from populax.loop.offpolicy import example_transition
from populax.loop.shape import LoopShape
from populax.memory import tree_bytes
from populax.population import make_executor


def member(tree, index):
    """Member ``index`` of a stacked pytree, on the host."""
    return jax.tree.map(lambda x: np.asarray(x)[index], tree)


take = jax.jit(frame_buffer_take)


def complete_transitions(buffer: FrameBuffer, env: int) -> tuple[np.ndarray, Transition]:
    """Absolute indices and rebuilt transitions of everything env ``env`` can still be sampled from."""
    first, end = int(np.asarray(buffer.oldest)[env]), int(np.asarray(buffer.count)[env])
    slots = buffer.obs_frame.shape[1]
    index = jnp.minimum(first + jnp.arange(slots), end - 1)  # one shape: one compilation
    rebuilt = jax.tree.map(np.asarray, take(buffer, jnp.full((slots,), env), index))
    return np.arange(first, end), rebuilt


def assert_rebuilt_equals_recorded(buffer: FrameBuffer, recorded: list[list[Transition]]) -> None:
    """Every sampleable transition of every env equals the row the env produced, bitwise."""
    for env, rows in enumerate(recorded):
        indices, rebuilt = complete_transitions(buffer, env)
        assert int(np.asarray(buffer.count)[env]) == len(rows)
        for position, index in enumerate(indices):
            for name in STORED_FIELDS:
                np.testing.assert_array_equal(np.asarray(getattr(rebuilt, name)[position]), getattr(rows[index], name),
                                              err_msg=f"env {env}, transition {index}, {name}")


def stacked_episode_rows(rng, envs: int, steps: int, stack: int, padding: str) -> list[list[Transition]]:
    """A frame-stacking env's rows, as the host collector records them (same-step autoreset).

    Episodes of 1-6 steps, each ended by a termination or a truncation (the
    final observation is then the row's ``next_obs``; the next row starts a
    new stack, padded with its first frame or with zeros).
    """
    def first_stack():
        frame = rng.integers(0, 256, (5, 3), np.uint8)
        pad = frame if padding == "repeat" else np.zeros_like(frame)
        return np.stack([pad] * (stack - 1) + [frame], axis=-1)

    recorded = []
    for _ in range(envs):
        rows, obs, left = [], first_stack(), rng.integers(1, 7)
        for _ in range(steps):
            next_obs = np.concatenate([obs[..., 1:], rng.integers(0, 256, (5, 3, 1), np.uint8)], axis=-1)
            left -= 1
            terminated = np.float32(left == 0 and rng.random() < 0.5)
            rows.append(Transition(obs, np.int32(rng.integers(6)), np.float32(rng.normal()), next_obs, terminated))
            if left == 0:
                obs, left = first_stack(), rng.integers(1, 7)
            else:
                obs = next_obs
        recorded.append(rows)
    return recorded


def blocks_of(recorded: list[list[Transition]], block: int):
    """Iteration-major blocks (row t * E + e is env e at step t), as the collector hands them over."""
    steps = len(recorded[0])
    for start in range(0, steps, block):
        rows = [recorded[env][t] for t in range(start, min(start + block, steps)) for env in range(len(recorded))]
        yield Transition(*(jnp.asarray(np.stack([getattr(row, name) for row in rows])) for name in STORED_FIELDS))


@pytest.mark.parametrize("padding", ["repeat", "zeros"])
def test_short_episodes_wrap_around_and_rebuild_bitwise(padding):
    """Episodes of 1-6 steps cost K frames at each start, so the frame ring (not the slots) runs out first:
    transitions whose oldest frame was overwritten are not sampled, all others equal the env's rows."""
    recorded = stacked_episode_rows(np.random.default_rng(3), envs=2, steps=90, stack=4, padding=padding)
    buffer = replay_init(recorded[0][0], capacity=24, envs=2)
    assert isinstance(buffer, FrameBuffer) and buffer.frames.shape == (2, 12 + 0 + 8, 5, 3)
    add = jax.jit(buffer_add)
    overwritten_frames = 0
    for block in blocks_of(recorded, 7):
        buffer = add(buffer, block)
        assert_rebuilt_equals_recorded(buffer, [rows[: int(np.asarray(buffer.count)[0])] for rows in recorded])
        overwritten_frames += int(np.any(np.asarray(buffer.oldest) > np.asarray(buffer.count) - 12))
    assert int(np.asarray(buffer.count)[0]) == 90 > 12  # the slots wrapped several times
    assert overwritten_frames > 0  # some complete-looking slots had lost a frame and were left out
    batch = jax.tree.map(np.asarray, jax.jit(buffer_sample, static_argnums=2)(buffer, jax.random.key(0), 256))
    sampleable = {(t.obs.tobytes(), t.next_obs.tobytes()) for env, rows in enumerate(recorded)
                  for t in rows[int(np.asarray(buffer.oldest)[env]):]}
    drawn = {(o.tobytes(), n.tobytes()) for o, n in zip(batch.obs, batch.next_obs)}
    assert drawn <= sampleable and len(drawn) > len(sampleable) // 2


def test_real_breakout_rows_through_the_collector_rebuild_bitwise(tmp_path):
    """ALE Breakout with populax's wrappers, two members x two envs, the collector's own blocks: game overs,
    140-step truncations and life-loss terminals; a 60-slot ring per env wraps around five times. Then the
    checkpoint round trip and PBT's buffer copy of that buffer."""
    spec = make_host_spec("ALE/Breakout-v5", terminal_on_life_loss=True, max_episode_steps=140)
    agent = Agent(init=lambda key, hp: {"w": jnp.zeros(())}, act=lambda s, obs, key, hp: jnp.zeros(obs.shape[0], jnp.int32),
                  policy=lambda s, obs: jnp.zeros(obs.shape[0], jnp.int32), update=lambda s, b, k, hp: (s, {}))
    loop = LoopShape(envs_per_member=2, iterations_per_phase=1, updates_per_phase=1, phases_per_chunk=25,
                     learning_starts=10**9, batch_size=32, buffer_size=120)
    plan = HostPlan(loop=loop, block_iterations=25, chunk_blocks=1, update_chunk=1, max_policy_lag=10**9)  # learning never starts: the collector acts uniformly at random
    functions = make_functions(agent, spec, plan, make_executor("vmap", 2), obs_norm=False)
    population = functions.init(jax.random.split(jax.random.key(0), 2), jnp.zeros(2))
    assert isinstance(population.experience, FrameBuffer)
    collector = Collector(spec, plan, functions, population, 2, "sync", seed=5, keys=collector_keys(5, 2))
    recorded = [[[] for _ in range(2)] for _ in range(2)]
    truncated = terminals = 0
    try:
        for _ in range(12):  # 300 iterations
            block = collector.collect_block()
            population = functions.insert(population, block.rows, block.stats)
            rows = jax.tree.map(np.asarray, block.rows)
            for m in range(2):
                for row in range(rows.reward.shape[1]):
                    recorded[m][row % 2].append(Transition(*(getattr(rows, name)[m, row] for name in STORED_FIELDS)))
            truncated += int(np.asarray(block.truncated).sum())
            terminals += int(rows.terminated.sum())
    finally:
        collector.close()
    for m in range(2):
        assert_rebuilt_equals_recorded(member(population.experience, m), recorded[m])
    assert truncated > 0 and terminals > 0 and int(np.asarray(population.experience.count).min()) == 300
    # Each transition's newest frame once (+ K at an episode start) instead of two whole stacks.
    assert np.asarray(population.experience.written).max() < 300 * 1.1
    check_checkpoint_round_trip_and_pbt_copy(functions, population, block, tmp_path)


def check_checkpoint_round_trip_and_pbt_copy(functions, population, block, tmp_path):
    """--save-buffer: the restored frame buffer is bitwise the saved one, so a resumed run samples and inserts
    exactly as the uninterrupted one would (a host resume also resets its envs from a derived seed, so whole
    resumed runs differ by design; the buffer is what must carry over). --pbt-copy-buffer copies it whole."""
    from populax.edits import apply_edits, no_edits
    from populax.run.checkpoint import restore, save_checkpoint

    path = save_checkpoint(tmp_path, population, chunk=0, manifest={}, save_buffer=True)
    template = jax.eval_shape(functions.init, jax.random.split(jax.random.key(0), 2), jnp.zeros(2))
    restored = restore(path, template).population
    assert isinstance(restored.experience, FrameBuffer) and restored.experience.stack == 4
    sample = jax.jit(jax.vmap(buffer_sample, in_axes=(0, None, None)), static_argnums=2)
    key = jax.random.key(7)

    def assert_same(a, b):
        for x, y in zip(jax.tree.leaves(a.experience), jax.tree.leaves(b.experience)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(sample(a.experience, key, 16)), jax.tree.leaves(sample(b.experience, key, 16))):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    assert_same(population, restored)
    assert np.asarray(sample(restored.experience, key, 16).obs).max() > 0  # real frames, not the empty ring
    frames = np.asarray(restored.experience.frames)
    assert not np.array_equal(frames[0], frames[1])
    copy = no_edits(restored.hparams, 2, None, copy_experience=True).replace(  # member 0 <- member 1
        targets=np.array([0]), sources=np.array([1]), whole=np.array([True]))
    restored_copy = jax.tree.map(jnp.copy, restored)
    copied = apply_edits(restored_copy, restored_copy, copy, init_agents=None).experience
    for leaf in jax.tree.leaves(copied):
        np.testing.assert_array_equal(np.asarray(leaf)[0], np.asarray(leaf)[1])
    # The next block goes in the same way (insert updates the buffers in place: each call consumes its input).
    assert_same(functions.insert(population, block.rows, block.stats), functions.insert(restored, block.rows, block.stats))


def test_atari_bytes_per_transition():
    """What a 1M-transition Atari buffer costs per member, from shapes alone (nothing allocated)."""
    spec = make_host_spec("ALE/Pong-v5")
    example = example_transition(spec.obs_shape, spec.obs_dtype, spec.action)
    frames = tree_bytes(jax.eval_shape(lambda: replay_init(example, 1_000_000, 1))) / 1_000_000
    whole = tree_bytes(jax.eval_shape(lambda: buffer_init(example, 1_000_000))) / 1_000_000
    assert round(whole) == 2 * 84 * 84 * 4 + 12  # two uint8 stacks, action, reward, terminated
    assert 84 * 84 < frames < 84 * 84 * 1.05 + 20  # one frame per transition (+3% for episode starts) and 5 numbers
    assert not isinstance(replay_init(example_transition((3,), np.float32, spec.action), 10, 1), FrameBuffer)


def test_a_copied_buffer_continues_with_other_envs():
    """PBT's --pbt-copy-buffer hands member i member j's buffer while member i's envs go on: the next rows do
    not continue the copied stacks, so they start new ones, and everything still rebuilds bitwise."""
    source = stacked_episode_rows(np.random.default_rng(1), envs=2, steps=20, stack=4, padding="repeat")
    own = stacked_episode_rows(np.random.default_rng(2), envs=2, steps=20, stack=4, padding="repeat")
    buffer = replay_init(source[0][0], capacity=80, envs=2)
    add = jax.jit(buffer_add)
    for block in [*blocks_of(source, 10), *blocks_of(own, 10)]:
        buffer = add(buffer, block)
    assert_rebuilt_equals_recorded(buffer, [a + b for a, b in zip(source, own)])


@pytest.mark.parametrize("dropped_steps", [6, 30])
def test_a_failed_chunk_is_rewound(dropped_steps):
    """Failure handling drops a chunk's transitions (the buffers are updated in place): what the chunk
    overwrote is gone, the rest of the old rows stay, and the env's next rows (it goes on) rebuild bitwise."""
    stream = stacked_episode_rows(np.random.default_rng(4), envs=2, steps=20 + dropped_steps + 10, stack=4,
                                  padding="repeat")
    before, dropped, after = ([rows[a:b] for rows in stream]
                              for a, b in ((0, 20), (20, 20 + dropped_steps), (20 + dropped_steps, None)))
    buffer = replay_init(stream[0][0], capacity=48, envs=2)
    add = jax.jit(buffer_add)
    for block in blocks_of(before, 10):
        buffer = add(buffer, block)
    kept = jax.tree.map(jnp.copy, buffer_without_transitions(buffer))
    size_before = int(buffer_size(buffer))
    assert kept.frames is None and kept.obs_frame is None and kept.count.shape == (2,)
    for block in blocks_of(dropped, dropped_steps):
        buffer = add(buffer, block)
    buffer = jax.jit(buffer_rewind_to)(buffer, kept, jnp.int32(2 * dropped_steps))
    size = int(buffer_size(buffer))  # 24 slots per env: 30 dropped rows overwrote every old one, 6 some
    assert (0 < size < size_before) if dropped_steps < 24 else size == 0
    assert_rebuilt_equals_recorded(buffer, before)
    for block in blocks_of(after, 5):
        buffer = add(buffer, block)
    assert_rebuilt_equals_recorded(buffer, [a + b for a, b in zip(before, after)])


def test_the_nature_buffer_is_counted_at_its_real_size(tmp_path, monkeypatch, capsys):
    """The recipe's 1M transitions: one member (6.8 GiB, plus its agent kept before each chunk) fits in 20 GB,
    four are refused in one line."""
    from populax.cli import main, parse_train_args
    from populax.runtime.setup import prepare

    monkeypatch.setenv("POPULAX_DEVICE_MEMORY", "20G")
    one = parse_train_args(["--env", "ALE/Pong-v5", "--algo", "dqn", "--pop", "1", "--out", str(tmp_path / "one")])
    assert one.buffer_size == 1_000_000 and one.total_steps >= 1_000_000
    prepare(one)
    capsys.readouterr()
    code = main(["train", "--env", "ALE/Pong-v5", "--algo", "dqn", "--pop", "4", "--out", str(tmp_path / "four")])
    lines = capsys.readouterr().err.strip().splitlines()
    error = lines[-1]
    assert code != 0 and error.startswith("populax: error: --buffer-size or --pop") and "Traceback" not in lines
    assert "--buffer-size or --pop" in error and "4 members x 6.8 GiB" in error and not (tmp_path / "four").exists()


def test_pbt_copy_buffer_copies_the_buffer_in_a_run(tmp_path):
    """--pbt-copy-buffer through the strategy runner (exploit with copy_experience failed under jit before):
    after the one exploit at step 200, the copy's first 200 transitions are its source's."""
    import json

    import populax

    config = populax.TrainConfig(env="Pendulum-v1", algo="td3", pop=2, total_steps=400, eval_every=200,
                                 eval_episodes=1, hidden=(8,), batch_size=16, learning_starts=100, seed=1,
                                 strategy="pbt", ready_interval=200, pbt_copy_buffer=True, out=str(tmp_path / "run"),
                                 progress=False, tensorboard=False)
    result = populax.train(config)
    events = [json.loads(line) for line in (result.run_dir / "lineage.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["exploit"]
    obs = np.asarray(result.population.experience.data.obs)
    assert obs.shape[1] == 400
    np.testing.assert_array_equal(obs[0, :200], obs[1, :200])
    assert not np.array_equal(obs[0, 200:], obs[1, 200:])
