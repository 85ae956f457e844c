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
