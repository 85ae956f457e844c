"""Shared fixtures. Tests use small networks (--hidden 64,64 or less) to stay fast."""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

# examples/ holds environments the tests train too (tests/custom_envs.py imports them by module name, as a
# user's own package would be imported).
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

# Several CPU devices let the sharded executor be tested on this machine; set
# before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

# Many tests compile the same programs (a run and its resume, in-process and in subprocesses): a compilation
# cache shared by the session's processes (pytest-xdist workers, CLI subprocesses inherit the variable) compiles
# each once, ~20% off the suite. A loaded executable is the compiled one, so bitwise comparisons are unaffected.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="populax-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)


# The longest test files first (by the per-file sums of `--durations=0` on the 2-core suite): pytest-xdist's
# --dist loadfile hands out one file at a time, by default the files with the most tests first, which left a few
# long files with few tests (Ray's, the sharded checks) to the end, one worker running them while the other idled.
# Longest first, then the rest in collection order, is the usual greedy balance.
LONGEST_FILES_FIRST = (
    "test_cohorts.py", "test_coupled.py", "test_ray.py", "test_runtime.py", "test_bench.py", "test_warm_start.py",
    "test_custom_envs.py", "test_learning.py", "test_failures.py", "test_sharded.py", "test_custom_algorithm.py",
    "test_cohort_reports.py", "test_cli.py", "test_checkpoint.py", "test_brax_env.py", "test_examples.py",
    "test_obs_norm.py", "test_policy.py",
)


def pytest_configure(config):
    """Keep the order below for pytest-xdist (its own reorder by test count would undo it)."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(session, config, items):
    """Run the longest files first (a stable sort: each file's tests keep their order)."""
    rank = {name: index for index, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
