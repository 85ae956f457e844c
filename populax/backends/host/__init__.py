"""The host backend (Gymnasium / ALE): collector, learner, and the per-member steps they map."""

from populax.backends.host.backend import HostBackend, make_host_backend
from populax.backends.host.collector import env_actions

__all__ = ["HostBackend", "env_actions", "make_host_backend"]
