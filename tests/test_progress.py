"""The progress display (issue 15): the four fields fit 80 columns unabbreviated; plain lines when not a terminal."""

import io
import math
import re
import time
from types import SimpleNamespace

from rich.console import Console

from populax.run.progress import ProgressDisplay, RateClock, progress_line


def state(steps=420_000, total=1_000_000, best=-1234.5):
    """A driver Progress after a few chunks (the display reads only these fields)."""
    return SimpleNamespace(total_steps=total, env_steps=steps, best_return=best, first_step_s=6.1, compile_s=4.2,
                           first_chunk_s=7.0)


def rates(start=0.0, observe_last=True):
    """8 members; first chunk (20k steps each) ended at start + 10 s, the latest (420k) at start + 100 s:
    35,556 env steps/s."""
    clock = RateClock(pop=8, now=start)
    clock.observe(20_000, now=start + 10.0)
    if observe_last:
        clock.observe(420_000, now=start + 100.0)
    return clock


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")
FIELDS = ("420,000/1,000,000 steps", "35,556 env steps/s", "best return -1234.5", "time left 2:10")


def test_line_at_80_columns_has_the_four_fields_unabbreviated():
    line = progress_line(state(), rates(), width=80, now=100.0)
    assert len(line) <= 80 and "…" not in line
    for field in FIELDS:  # 580k steps x 8 members at 35,556/s: 130.5 s
        assert field in line, line


def test_wider_terminals_show_more():
    narrow = progress_line(state(), rates(), width=80, now=100.0)
    wide = progress_line(state(), rates(), width=160, now=100.0)
    assert len(wide) > len(narrow) and "━" in wide and "elapsed 1:40" in wide and "4.2s compiling" in wide
    assert all(field in wide for field in FIELDS)


def test_live_display_rendered_on_an_80_column_console():
    """Through rich: a terminal console of 80 columns, the last frame holds every field whole."""
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    with ProgressDisplay(pop=8, total_steps=1_000_000, console=console) as display:
        # update() notes the 420k steps at the real clock's now: anchor the first chunk 100 s before it, so the
        # rate does not depend on how long the machine has been up (perf_counter counts from boot).
        display.rates = rates(start=time.perf_counter() - 100.0, observe_last=False)
        display.update(state())
    frames = [line for line in ANSI.sub("\n", out.getvalue()).split("\n") if line.strip()]
    last = frames[-1]
    assert len(last) <= 80
    for field in ("420,000/1,000,000 steps", "env steps/s", "best return -1234.5", "time left "):
        assert field in last, last
    assert "…" not in last


def test_non_interactive_output_prints_a_plain_line_per_evaluation():
    out = io.StringIO()
    console = Console(file=out, width=80)  # not a terminal: CI, a pipe
    with ProgressDisplay(pop=2, total_steps=30_000, console=console) as display:
        for steps, best in ((10_000, 12.0), (20_000, 80.5), (30_000, 200.0)):
            display.update(state(steps, 30_000, best))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and all(line.startswith("populax: ") and "\x1b" not in line for line in lines)
    assert "30,000/30,000 steps" in lines[-1] and "best return 200.0" in lines[-1] and "time left 0:00" in lines[-1]


def test_disabled_display_prints_nothing():
    out = io.StringIO()
    with ProgressDisplay(pop=1, total_steps=10, console=Console(file=out), enabled=False) as display:
        display.update(state(10, 10, math.inf))
    assert out.getvalue() == ""
