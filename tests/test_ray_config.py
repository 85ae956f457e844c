"""``--executor ray`` settings: what it refuses, in one line naming the setting, before anything starts."""

import pytest
import yaml

from populax.errors import ConfigError
from populax.run.config import TrainConfig, config_to_dict
from populax.runtime import prepare


@pytest.mark.parametrize("settings, message", [
    ({"workers": 9}, "--workers 9: more workers than members (--pop 8)"),
    ({"workers": 0}, "--workers must be >= 1"),
    ({"worker_cpus": 0.0}, "--worker-cpus must be > 0"),
    ({"algo": "cemrl"}, "--executor ray: cemrl couples its members"),
])
def test_ray_settings_are_checked_before_anything_starts(tmp_path, settings, message):
    config = TrainConfig(executor="ray", pop=8, out=str(tmp_path / "run"), **settings)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare(config)
    assert not (tmp_path / "run").exists()


def free_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("flags, message", [
    (["--ray-address", "notahost"], "--ray-address: expected HOST:PORT of a running cluster's head"),
    (["--ray-address", "127.0.0.1:{port}"], "--ray-address: cannot reach 127.0.0.1:{port} (Connection refused)"),
    (["--worker-gpus", "1000"], "--worker-gpus 1000: 2 workers need 2000 GPUs and the Ray instance has "),
])
def test_ray_that_cannot_run_is_one_line_and_an_earlier_run_stays(tmp_path, capsys, flags, message):
    """An unreachable or malformed --ray-address, and GPUs the instance does not have, made Ray retry or wait for
    ever (a malformed address: a ValueError traceback), after --force had deleted the earlier run. Now each is one
    line, exit 2, checked before the earlier run's directory is touched."""
    import json

    from populax.cli import main

    port = free_port()
    flags, message = [f.format(port=port) for f in flags], message.format(port=port)
    earlier = tmp_path / "run"
    earlier.mkdir()
    (earlier / "config.yaml").write_text(yaml.safe_dump(config_to_dict(TrainConfig(out=str(earlier)))))
    (earlier / "summary.json").write_text(json.dumps({"best_return": 1.0}))
    assert main(["train", "--pop", "2", "--total-steps", "400", "--eval-every", "200", "--hidden", "8,8", "--learning-starts", "100",
                 "--no-progress", "--executor", "ray", "--workers", "2", *flags, "--out", str(earlier),
                 "--force"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("populax: error: ") and message in err and "\n" not in err, err
    assert sorted(p.name for p in earlier.iterdir()) == ["config.yaml", "summary.json"]


def test_ray_address_auto_with_no_cluster_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    """``--ray-address auto`` with no cluster on the machine printed Ray's own advice (``--address`` flag,
    RAY_ADDRESS) and a token hint that does not apply. Ray's "auto" also joins any Ray instance it finds running
    on the machine (another run's private one included), so the search for running ones is emptied here: the test
    is about the answer when there is none."""
    import functools

    import ray._private.services as services

    from populax.cli import main

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    no_instances = functools.lru_cache(lambda: frozenset())  # Ray clears the cache of its own on the way
    monkeypatch.setattr(services, "find_gcs_addresses", no_instances)
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: None)
    assert main(["train", "--pop", "2", "--total-steps", "400", "--eval-every", "200", "--hidden", "8,8",
                 "--learning-starts", "100", "--no-progress", "--executor", "ray", "--workers", "2",
                 "--ray-address", "auto",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("populax: error: --ray-address auto: no Ray cluster runs on this machine (start one with `ray start "
                   "--head`, give HOST:PORT of a remote head, or leave --ray-address out for a private Ray instance)"), err
    assert not (tmp_path / "run").exists()


def test_ray_backend_splits_members_into_contiguous_blocks():
    from populax.backends.cluster import block_members

    assert [b.tolist() for b in block_members(8, 2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [b.tolist() for b in block_members(7, 3)] == [[0, 1, 2], [3, 4], [5, 6]]



def test_a_workers_share_of_a_round_numbers_its_own_and_imported_sources():
    """Blocks [0,1,2] [3,4,5] [6,7]: worker 1's targets 3 and 5 copy member 7 (worker 2), 4 and 0 (worker 0)
    and its own member 4. Its share: targets and the hyperparameter rows in its own indices, member 4 its own
    source, imports from workers 0 and 2 in block order, and per copy the row of its source among own then
    imported rows; a mixed population's share numbers an imported source after the block's own rows and
    carries its members' new cohorts."""
    import numpy as np

    from populax.backends.cluster.blocks import block_members, block_share
    from populax.edits import no_edits

    blocks = block_members(8, 3)
    block_of = np.concatenate([np.full(len(b), i) for i, b in enumerate(blocks)])
    edits = no_edits(np.arange(8.0), 8).replace(
        targets=np.array([3, 5, 1, 6]), sources=np.array([7, 0, 4, 4]), whole=np.array([False, True, False, False]),
        reinit=np.array([2, 4]), reinit_keys=np.array([20, 40]), cohorts=np.array([0, 0, 0, 1, 1, 0, 1, 1]))
    share = block_share(edits, blocks, block_of, 1, mixed=False)
    assert share.edits.targets.tolist() == [0, 2] and share.edits.whole.tolist() == [False, True]
    assert share.edits.hparams.tolist() == [3.0, 4.0, 5.0]
    assert share.edits.reinit.tolist() == [1] and share.edits.reinit_keys.tolist() == [40]
    assert share.own_sources == [] and share.imports == {0: [0], 2: [7]}
    assert share.index == [1, 0]  # member 7 is the second imported row, member 0 the first
    share = block_share(edits, blocks, block_of, 2, mixed=True)
    assert share.edits.targets.tolist() == [0] and share.own_sources == [] and share.imports == {1: [4]}
    assert share.edits.sources.tolist() == [2] and share.edits.cohorts.tolist() == [1, 1]  # 2 rows, then member 4
    share = block_share(edits, blocks, block_of, 0, mixed=True)
    assert share.edits.targets.tolist() == [1] and share.imports == {1: [4]} and share.edits.sources.tolist() == [3]

def test_memory_check_counts_one_block_per_node_on_a_cluster(tmp_path, monkeypatch):
    """A local Ray instance's blocks share this host's memory: the whole population counts; on a cluster
    (``--ray-address``) each worker's node holds one block, and the driver none: one block counts."""
    monkeypatch.setenv("POPULAX_DEVICE_MEMORY", "20M")  # 4 members need ~30 MiB (twice their state), a block ~15
    settings = dict(executor="ray", pop=4, workers=2, buffer_size=100_000)
    with pytest.raises(ConfigError, match="4 members"):
        prepare(TrainConfig(out=str(tmp_path / "local"), **settings))
    prepare(TrainConfig(out=str(tmp_path / "cluster"), ray_address="127.0.0.1:6390", **settings))


def test_ray_backend_kind_is_ray_and_names_the_backend_its_workers_run(tmp_path):
    """summary.json's ``backend`` is the Ray backend's ``kind``; ``worker_backend`` its ``inner_kind``."""
    backend = prepare(TrainConfig(executor="ray", pop=2, workers=1, out=str(tmp_path / "run"))).backend
    assert (backend.kind, backend.inner_kind) == ("ray", "compiled")
    assert backend.summary()["worker_backend"] == "compiled"
