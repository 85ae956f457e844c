"""Helpers for tests that run `populax` in a child process (kill -9, SIGINT)."""

import sys
import time


def cli(*args: str) -> list[str]:
    """argv running the populax CLI with this interpreter."""
    return [sys.executable, "-m", "populax.cli", *args]


def wait_for(condition, process, timeout: float = 600.0) -> None:
    """Poll ``condition`` until true; fail if ``process`` exits first or ``timeout`` passes."""
    start = time.monotonic()
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() - start < timeout
        time.sleep(0.05)
