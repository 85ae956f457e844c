"""`populax bench update-step`: every implementation computes the same update; the
command writes its JSON, CSV and PNG. Correctness only, never timing."""

import json

import jax
import numpy as np
import pytest

from populax.bench.cases import make_case
from populax.bench.impls import IMPLS, TorchPopulation, comparable, make_impl
from populax.cli import main
from populax.errors import ConfigError
from populax.population import make_executor

TINY = {"hidden": (16, 16), "batch": 8}


def smoothing_noise(case):
    """The standard-normal draws TD3's (single-step) update makes from each member's key."""
    return [np.asarray(jax.vmap(lambda k: jax.random.normal(k, case.batch.action.shape[1:]))(case.keys))]


def params_after(impl, calls):
    impl.run(calls)
    result = comparable(impl.result())
    impl.close()
    return result


@pytest.mark.parametrize("steps_at_once", [1, 3])
def test_every_implementation_computes_the_same_update(steps_at_once):
    """Three calls: critic steps and (delay 2) one actor + target step per member."""
    pop, calls = 2, 3
    case = make_case("td3", pop, seed=1, **TINY)
    reference = params_after(make_impl("jax-vmap", case, steps_at_once), calls)
    start = comparable(case.state)
    # the update moved every member, and the members differ
    assert not np.allclose(reference["actor"][0], start["actor"][0])
    assert not np.allclose(reference["critic"][0][0], reference["critic"][0][1])
    # (torch has its own test; one process per member is slow to start, so K=1 only)
    skip = {"jax-vmap", "torch-sequential", "torch-vectorized"} | ({"jax-parallel", "jax-sharded"} if steps_at_once > 1 else set())
    names = [n for n in IMPLS if n not in skip]
    for name in names:
        if name == "jax-sharded" and pop % jax.local_device_count():
            continue
        got = params_after(make_impl(name, case, steps_at_once), calls)
        for part in ("actor", "critic"):
            for g, r in zip(got[part], reference[part]):
                np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5, err_msg=f"{name} {part}")


@pytest.mark.parametrize("algo, tiny", [("sac", TINY), ("dqn", {"hidden": (16,), "batch": 4})])
def test_sac_and_dqn_cases_compute_the_same_update_in_every_jax_implementation(algo, tiny):
    case = make_case(algo, 2, seed=1, **tiny)
    reference = params_after(make_impl("jax-vmap", case, 1), 3)["state"]
    start = comparable(case.state)["state"]
    assert any(not np.allclose(r, s) for r, s in zip(reference, start))  # the update moved the parameters
    for name in ("jax-sequential", "jax-sharded", "auto"):
        got = params_after(make_impl(name, case, 1), 3)["state"]
        assert len(got) == len(reference)
        for g, r in zip(got, reference):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4, err_msg=f"{algo} {name}")


@pytest.mark.parametrize("vectorized", [False, True])
def test_torch_computes_the_jax_update(vectorized):
    """Same initial parameters, batch and smoothing noise: the same parameters after
    critic steps and a delayed actor + target step."""
    pytest.importorskip("torch")
    case = make_case("td3", 3, seed=2, **TINY)
    reference = params_after(make_impl("jax-vmap", case, 1), 2)
    torch_impl = TorchPopulation(case, 1, vectorized=vectorized, noise=smoothing_noise(case))
    got = params_after(torch_impl, 2)
    for part in ("actor", "critic"):
        for g, r in zip(got[part], reference[part]):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5, err_msg=part)
    # and a wrong noise draw would have been caught
    wrong = TorchPopulation(case, 1, vectorized=vectorized, noise=[-smoothing_noise(case)[0]])
    moved = params_after(wrong, 2)
    assert not np.allclose(moved["critic"][0], reference["critic"][0], rtol=1e-4, atol=1e-5)


def test_auto_and_chunked_executors_agree_with_vmap_on_the_update():
    case = make_case("td3", 4, seed=3, **TINY)
    reference = params_after(make_impl("jax-vmap", case, 1), 2)
    update = lambda s, b, k, h: case.agent.update(s, b, k, h)[0]  # noqa: E731
    for name in ("auto", "chunked:1", "chunked:2"):
        fn = make_executor(name, case.pop)(update)
        state = case.state
        for _ in range(2):
            state = fn(state, case.batch, case.keys, case.hparams)
        got = comparable(state)
        for g, r in zip(got["critic"], reference["critic"]):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5, err_msg=name)


def test_bench_command_writes_json_csv_and_png(tmp_path):
    out = tmp_path / "bench" / "result.json"
    impls = "jax-sequential,jax-sharded,auto"
    code = main(["bench", "update-step", "--algo", "td3", "--pop", "1,2", "--impl", impls, "--hidden", "8,8",
                 "--batch", "4", "--calls", "4", "--rounds", "2", "--matmul-size", "128", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    machine = report["machine"]
    # the roofline's peak: the best of one GEMM over all cores and one GEMM per device at once (conftest: 2 devices)
    assert set(machine["matmul_peaks_gflops"]) == {"one GEMM over all cores, default precision",
                                                   "one GEMM per device on 2 devices, default precision"}
    assert machine["matmul_peak_gflops"] == max(machine["matmul_peaks_gflops"].values()) > 0
    assert machine["matmul_peaks_gflops"][machine["matmul_peak_kind"]] == machine["matmul_peak_gflops"]
    rows = report["results"]
    assert {(r["impl"], r["pop"]) for r in rows} == {(i, p) for i in impls.split(",") for p in (1, 2)}
    timed = [r for r in rows if "skipped" not in r]
    skipped = {(r["impl"], r["pop"]) for r in rows if "skipped" in r}
    assert ("jax-sharded", 1) in skipped  # 1 member cannot split over 2 devices
    assert len(timed) == 5
    for r in timed:
        assert r["algo"] == "td3" and r["steps_at_once"] == 1 and r["calls"] == 4
        assert 0 < r["median_ms"] <= r["p90_ms"]
        assert r["per_member_ms"] == pytest.approx(r["median_ms"] / r["pop"])
        assert r["gflops"] > 0 and r["compile_s"] >= 0
    # FLOPs scale with the members timed
    flops = {r["pop"]: r["member_update_flops"] for r in timed}
    assert flops[1] == flops[2] > 0
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_lines = out.with_suffix(".csv").read_text().splitlines()
    assert csv_lines[0].startswith("algo,impl,pop,steps_at_once,median_ms") and len(csv_lines) == 1 + len(rows)


@pytest.mark.parametrize("args, message", [
    (["--impl", "jax-magic"], "--impl"),
    (["--pop", "0"], "--pop"),
    (["--pop", "two"], "--pop"),
    (["--algo", "ppo"], "--algo"),
    (["--out", "result.txt"], "--out"),
])
def test_bench_rejects_bad_input_and_writes_nothing(tmp_path, capsys, args, message):
    out_args = [] if "--out" in args else ["--out", str(tmp_path / "r.json")]
    assert main(["bench", "update-step", *args, *out_args]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    with pytest.raises(ConfigError):
        from populax.bench.cli import parse_bench_args

        parse_bench_args(args)


def test_auto_picks_a_compiled_loop_for_large_networks_on_cpu_only():
    from populax.population import auto_chunk

    small, large = make_case("td3", 2, **TINY), make_case("td3", 2)
    assert auto_chunk(2, large.state, platform="cpu") == 1
    assert auto_chunk(2, small.state, platform="cpu") == 2
    assert auto_chunk(2, large.state, platform="gpu") == 2
    # replay buffers are not weights: a member program's large buffer does not count
    assert auto_chunk(2, {"buffer": np.zeros((2, 100_000, 17)), "net": small.state}, platform="cpu") == 2


def test_auto_splits_the_members_over_devices_when_they_divide_evenly():
    from populax.population import auto_plan

    small, large = make_case("td3", 2, **TINY), make_case("td3", 2)
    # (devices, members vmapped together on each): wide networks loop, narrow ones vmap
    assert auto_plan(8, large.state, platform="cpu", devices=2) == (2, 1)
    assert auto_plan(8, small.state, platform="cpu", devices=2) == (2, 4)
    assert auto_plan(3, small.state, platform="cpu", devices=2) == (1, 3)
    assert auto_plan(8, small.state, platform="cpu", devices=1) == (1, 8)
    assert auto_plan(8, large.state, platform="gpu", devices=4) == (4, 2)
    # convolutions: vmap on CPU (a compiled loop runs them ~9x slower there)
    conv = make_case("dqn", 2, hidden=(16,), batch=4)
    assert auto_plan(8, conv.state, platform="cpu", devices=2) == (2, 4)


# --- torch SAC and DQN: the same numbers as the JAX update -------------------------------------


def sac_noise(case, sign=1.0):
    """The two standard-normal draws SAC's update makes from each member's key (at s', then at s)."""
    shape = case.batch.action.shape[1:]

    def draws(key):
        next_key, actor_key = jax.random.split(key)
        return jax.numpy.stack([jax.random.normal(next_key, shape), jax.random.normal(actor_key, shape)])

    return [sign * np.asarray(jax.vmap(draws)(case.keys))]


def close(got, reference, rtol, atol):
    """Every array of every part allclose (same parts, same lengths)."""
    assert got.keys() == reference.keys()
    return all(len(got[p]) == len(reference[p]) and all(np.allclose(g, r, rtol=rtol, atol=atol) for g, r in zip(got[p], reference[p]))
               for p in reference)


def assert_close(got, reference, rtol, atol):
    assert got.keys() == reference.keys()
    for part in reference:
        assert len(got[part]) == len(reference[part]), part
        for i, (g, r) in enumerate(zip(got[part], reference[part])):
            np.testing.assert_allclose(g, r, rtol=rtol, atol=atol, err_msg=f"{part}[{i}]")


@pytest.fixture(scope="module")
def sac_reference():
    """A tiny SAC population and its JAX-vmap parameters after 2 updates."""
    from populax.bench.torch_sac import sac_params

    case = make_case("sac", 3, seed=2, **TINY)
    return case, sac_params(params_after_raw(make_impl("jax-vmap", case, 1), 2)), sac_params(case.state)


def params_after_raw(impl, calls):
    impl.run(calls)
    result = impl.result()
    impl.close()
    return result


@pytest.mark.parametrize("vectorized", [False, True])
def test_torch_sac_computes_the_jax_update(sac_reference, vectorized):
    """Same initial parameters, batch and reparameterisation draws: the same actor, critics, target
    critics and temperature after 2 updates (critic, actor, alpha and Polyak steps each time)."""
    pytest.importorskip("torch")
    case, reference, start = sac_reference
    for part in reference:  # the updates moved every part (the target critics by tau of a step)
        assert not np.array_equal(reference[part][0], start[part][0]), part
    got = params_after(TorchPopulation(case, 1, vectorized=vectorized, noise=sac_noise(case)), 2)
    assert_close(got, reference, rtol=1e-4, atol=1e-5)
    # and a wrong draw (the noise negated) would have been caught
    wrong = params_after(TorchPopulation(case, 1, vectorized=vectorized, noise=sac_noise(case, sign=-1.0)), 2)
    assert not np.allclose(wrong["actor"][0], reference["actor"][0], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def dqn_reference():
    """A tiny Nature-CNN DQN population whose members copy their target every 1, 2 and 500 updates,
    and its JAX-vmap parameters after 2 updates."""
    from populax.bench.torch_dqn import dqn_params

    case = make_case("dqn", 3, seed=2, hidden=(16,), batch=4)
    case = case._replace(hparams=case.hparams.replace(target_period=jax.numpy.asarray([1, 2, 500])))
    return case, dqn_params(params_after_raw(make_impl("jax-vmap", case, 1), 2)), dqn_params(case.state)


# Adam's first steps move a parameter by lr * g / (|g| + 1e-8): where a gradient is ~1e-8 (a
# tiny batch leaves many conv units nearly dead), oneDNN's and XLA's different summation orders
# are amplified to a few percent of one step (3e-5 measured at lr 1e-3). So DQN's atol is a
# tenth of a learning-rate step; a wrong input moves parameters by whole steps.
DQN_ATOL = 1e-4


@pytest.mark.parametrize("vectorized", [False, True])
def test_torch_dqn_computes_the_jax_update(dqn_reference, vectorized):
    """Same initial parameters and batch: the same online and target parameters after 2 Double-DQN
    updates (Nature CNN, dueling head, Huber, clipped gradient), including the per-member target copy."""
    pytest.importorskip("torch")
    case, reference, start = dqn_reference
    online, target = reference["params"], reference["target"]
    assert not np.allclose(online[0][0], start["params"][0][0])  # the updates moved the network
    for i in range(len(online)):  # the target copy: every update, every 2nd, not yet
        np.testing.assert_array_equal(target[i][:2], online[i][:2])
        np.testing.assert_array_equal(target[i][2], start["target"][i][2])
    got = params_after(TorchPopulation(case, 1, vectorized=vectorized), 2)
    assert_close(got, reference, rtol=1e-4, atol=DQN_ATOL)
    # and a wrong input (the rewards negated) would have been caught
    batch = case.batch._replace(reward=-case.batch.reward)
    wrong = params_after(TorchPopulation(case._replace(batch=batch), 1, vectorized=vectorized), 2)
    assert not close(wrong, reference, rtol=1e-4, atol=DQN_ATOL)


def test_torch_gradient_clip_is_optax_clip_by_global_norm_per_member():
    """The DQN case's gradients stay under the clip norm, so the clip is checked on its own: each
    member of a vectorized gradient is clipped by its own global norm, as optax does per member."""
    torch = pytest.importorskip("torch")
    import optax

    from populax.bench.torch_dqn import clip_by_global_norm

    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(3, 5, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)]
    grads[0][1] *= 0.1  # member 1 under the norm, members 0 and 2 over it
    grads[1][1] *= 0.1
    clip = optax.clip_by_global_norm(2.0)
    expected = [clip.update([g[i] for g in grads], clip.init(None))[0] for i in range(3)]
    got = clip_by_global_norm(tuple(torch.from_numpy(g) for g in grads), 2.0, pop=3)
    for j, g in enumerate(got):
        np.testing.assert_allclose(g.numpy(), np.stack([e[j] for e in expected]), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got[0][1].numpy(), grads[0][1])  # under the norm: untouched
    single = clip_by_global_norm(tuple(torch.from_numpy(g[0]) for g in grads), 2.0, pop=None)
    for j, g in enumerate(single):
        np.testing.assert_allclose(g.numpy(), expected[0][j], rtol=1e-6, atol=1e-7)
