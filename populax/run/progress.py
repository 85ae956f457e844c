"""The training progress display: a live line that fits the terminal, or plain lines when not a terminal.

Four fields always come first and are never cut: steps done/total (per
member), env steps per second (all members, this session), the best return
of the last evaluation and the time left. A wider terminal adds a bar, how
long the first step took (compilation) and the elapsed time. When the output
is not a terminal (CI, a pipe) there is no live line: one plain line per
evaluation is printed instead.
"""

from __future__ import annotations

import math
import time
from typing import Any

from rich.console import Console, ConsoleOptions, RenderResult
from rich.live import Live
from rich.text import Text

SEPARATOR = "  "
BAR_MIN = 10
"""Narrowest bar worth drawing (characters)."""


def clock(seconds: float | None) -> str:
    """H:MM:SS (or M:SS under an hour); '--:--' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "--:--"
    seconds = int(max(seconds, 0.0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def compact(number: float) -> str:
    """1,234 below a million, 1.23M above (keeps the steps field short on long runs)."""
    return f"{number:,.0f}" if number < 1_000_000 else f"{number / 1e6:.3g}M"


class RateClock:
    """Env-step rate and time left from this session's steady state (the first chunk, which compiles, excluded)."""

    def __init__(self, pop: int, now: float | None = None, start_steps: int = 0):
        self.pop = pop
        self.start = time.perf_counter() if now is None else now
        self.start_steps = start_steps
        """Steps per member done before this session (a resumed run's checkpoint): not this session's work."""
        self.base: tuple[float, int] | None = None
        """(time, steps) at the end of the first chunk this session saw."""
        self.last: tuple[float, int] | None = None

    def observe(self, env_steps: int, now: float | None = None) -> None:
        """Note the steps per member done at the end of a chunk."""
        now = time.perf_counter() if now is None else now
        if self.base is None:
            self.base = (now, env_steps)
        self.last = (now, env_steps)

    def steps_per_s(self) -> float | None:
        """Env steps per second over all members since the first chunk ended; after one chunk, over the session
        (compilation included); None before any chunk."""
        if self.base is None or self.last is None:
            return None
        if self.last[1] > self.base[1] and self.last[0] > self.base[0]:
            return (self.last[1] - self.base[1]) / (self.last[0] - self.base[0]) * self.pop
        done = self.last[1] - self.start_steps
        return done * self.pop / (self.last[0] - self.start) if self.last[0] > self.start else None

    def seconds_left(self, total_steps: int, now: float) -> float | None:
        """Seconds from ``now`` until ``total_steps`` per member at the current rate."""
        rate = self.steps_per_s()
        if not rate or self.last is None:
            return None
        return max(total_steps - self.last[1], 0) * self.pop / rate - (now - self.last[0])


def essential_fields(state: Any, rates: RateClock, now: float, numbers=None) -> list[str]:
    """The four fields every display shows, in order: steps, rate, best return, time left (at time ``now``)."""
    numbers = numbers or (lambda n: f"{n:,.0f}")
    rate = rates.steps_per_s()
    best = state.best_return
    done = state.env_steps >= state.total_steps
    return [
        f"{numbers(state.env_steps)}/{numbers(state.total_steps)} steps",
        f"{'--' if rate is None else f'{rate:,.0f}'} env steps/s",
        f"best return {'--' if not math.isfinite(best) else f'{best:.1f}'}",
        f"time left {clock(0.0 if done else rates.seconds_left(state.total_steps, now))}",
    ]


def first_step_text(state: Any) -> str:
    """'first step at 6.1s (4.2s compiling)': how long the user waited for training to start."""
    first_step = getattr(state, "first_step_s", None)
    if first_step is None:
        first_chunk = getattr(state, "first_chunk_s", None)
        return "compiling" if first_chunk is None else f"first chunk {first_chunk:.1f}s"
    return f"first step at {first_step:.1f}s ({state.compile_s:.1f}s compiling)"


def bar(fraction: float, width: int) -> str:
    """A text bar of ``width`` characters filled to ``fraction``."""
    filled = int(round(min(max(fraction, 0.0), 1.0) * width))
    return "━" * filled + "─" * (width - filled)


def progress_line(state: Any, rates: RateClock, width: int, now: float) -> str:
    """The richest line that fits ``width`` columns; the four essential fields are never cut.

    From wide to narrow: bar + fields + elapsed + first-step text; bar +
    fields; fields alone; fields with compact step counts (1.5M).
    """
    fields = essential_fields(state, rates, now)
    extras = [f"elapsed {clock(now - rates.start)}", first_step_text(state)]
    fraction = state.env_steps / max(state.total_steps, 1)
    candidates = []
    for extra in (len(extras), 1, 0):
        text = SEPARATOR.join(fields + extras[:extra])
        room = width - len(text) - len(SEPARATOR)
        if room >= BAR_MIN:
            candidates.append(bar(fraction, min(room, 40)) + SEPARATOR + text)
    candidates.append(SEPARATOR.join(fields))
    candidates.append(" ".join(essential_fields(state, rates, now, compact)))
    for line in candidates:
        if len(line) <= width:
            return line
    return candidates[-1]  # narrower than the fields themselves: the terminal wraps, nothing is cut


def plain_line(state: Any, rates: RateClock, now: float) -> str:
    """One line per evaluation for non-interactive output."""
    return "populax: " + SEPARATOR.join(essential_fields(state, rates, now) + [f"elapsed {clock(now - rates.start)}"])


class ProgressDisplay:
    """Fed the driver's Progress after every chunk; draws a live line on a terminal, prints plain lines otherwise.

    Use as a context manager around the run; ``update`` is the driver's ``on_chunk``.
    """

    def __init__(self, pop: int, total_steps: int, console: Console, enabled: bool = True, start_steps: int = 0):
        self.console = console
        self.enabled = enabled
        self.interactive = enabled and console.is_terminal
        self.rates = RateClock(pop, start_steps=start_steps)
        self.state: Any = _Waiting(total_steps)
        self.live = Live(self, console=console, refresh_per_second=2, transient=False) if self.interactive else None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """The live line at the console's current width."""
        yield Text(progress_line(self.state, self.rates, options.max_width, time.perf_counter()),
                   no_wrap=True, overflow="fold")

    def update(self, state: Any) -> None:
        """Called by the driver after each chunk (each evaluation)."""
        self.state = state
        self.rates.observe(state.env_steps)
        if self.enabled and not self.interactive:
            self.console.print(plain_line(state, self.rates, time.perf_counter()),
                               highlight=False, soft_wrap=True)

    def __enter__(self) -> ProgressDisplay:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)


class _Waiting:
    """Progress before the first chunk has finished."""

    def __init__(self, total_steps: int):
        self.total_steps = total_steps
        self.env_steps = 0
        self.best_return = -math.inf
        self.first_chunk_s = None
        self.compile_s = None
        self.first_step_s = None
