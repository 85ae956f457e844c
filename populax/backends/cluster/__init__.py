"""``--executor ray``: blocks of members on Ray workers, under the one driver loop.

``backend``: the driver's side (``RayBackend``: what the workers do, a round's copies routed between them, a dead
one's block reloaded); ``pool``: the Ray actors themselves (``WorkerPool``: started once, called all at once, a
dead one told from a healthy one and restarted); ``worker``: a Ray actor running the compiled or host backend over its block; ``blocks``: the layout
and each block's share of the driver's decisions; ``traffic``: what crossed the network (``RUN/ray.jsonl``).
"""

from populax.backends.cluster.backend import RayBackend, make_ray_backend
from populax.backends.cluster.blocks import block_members

__all__ = ["RayBackend", "block_members", "make_ray_backend"]
