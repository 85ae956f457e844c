"""``--executor ray`` settings: what it refuses, in one line naming the setting, before anything starts."""

import pytest

from populax.errors import ConfigError
from populax.run.config import TrainConfig
from populax.runtime import prepare


@pytest.mark.parametrize("settings, message", [
    ({"workers": 9}, "--workers 9: more workers than members (--pop 8)"),
    ({"workers": 0}, "--workers must be >= 1"),
    ({"worker_cpus": 0.0}, "--worker-cpus must be > 0"),
    ({"on_failure": "freeze"}, "--on-failure freeze: not supported with --executor ray"),
    ({"algo": "cemrl"}, "--executor ray: cemrl couples its members"),
])
def test_ray_settings_are_checked_before_anything_starts(tmp_path, settings, message):
    config = TrainConfig(executor="ray", pop=8, out=str(tmp_path / "run"), **settings)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare(config)
    assert not (tmp_path / "run").exists()


def test_ray_backend_splits_members_into_contiguous_blocks():
    from populax.backends.cluster import block_members

    assert [b.tolist() for b in block_members(8, 2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [b.tolist() for b in block_members(7, 3)] == [[0, 1, 2], [3, 4], [5, 6]]


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
