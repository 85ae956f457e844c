"""``--executor ray`` settings: what it refuses, in one line naming the setting, before anything starts."""

import pytest

from populax.errors import ConfigError
from populax.run.config import TrainConfig
from populax.runtime import prepare


@pytest.mark.parametrize("settings, message", [
    ({"env": "HalfCheetah-v5"}, "--executor ray: runs compiled (gymnax, brax:) environments only so far"),
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
