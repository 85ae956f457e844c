"""``--executor ray``: blocks of members on Ray workers, under the one driver loop.

``backend``: the driver's side (``RayBackend``: start the workers, route a round's copies between them, reload a
dead one); ``worker``: a Ray actor running the compiled or host backend over its block; ``blocks``: the layout
and each block's share of the driver's decisions; ``traffic``: what crossed the network (``RUN/ray.jsonl``).
"""

from populax.backends.cluster.backend import RayBackend, make_ray_backend
from populax.backends.cluster.blocks import block_members

__all__ = ["RayBackend", "block_members", "make_ray_backend"]
