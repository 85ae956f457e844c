"""When did training really start? XLA compilation timed from JAX's own events.

The first chunk of a run includes compiling it, and a chunk can be long, so
"time of the first chunk" overstates how long a user waits for training to
start. JAX reports every compilation's phases through ``jax.monitoring``; the
clock below sums them while the first chunk runs and notes the moment the last
compilation ended, which is when the first training step began.
"""

from __future__ import annotations

import time
from typing import Any

import jax.monitoring

COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


class CompileClock:
    """Context manager: ``compile_s`` (tracing + lowering + XLA) and ``first_step_s`` since ``start``."""

    def __init__(self, start: float):
        self.start = start
        self.compile_s = 0.0
        self.first_step_s: float | None = None
        """Seconds from ``start`` to the end of the last compilation (None if nothing compiled)."""

    def _listen(self, event: str, duration: float, **_: Any) -> None:
        if event in COMPILE_EVENTS:
            self.compile_s += duration
            self.first_step_s = time.perf_counter() - self.start

    def __enter__(self) -> CompileClock:
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc: Any) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listen)
