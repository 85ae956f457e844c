"""Shared fixtures. Tests use small networks (--hidden 64,64 or less) to stay fast."""

import os

# Several CPU devices let the sharded executor be tested on this machine; set
# before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
