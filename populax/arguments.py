"""The command line's argument parser: a mistyped flag is one line naming it, with the closest flag there is.

argparse's own error prints the whole usage (over 30 lines for ``populax train``) before the one line that
matters; populax's rule for a user's mistake is one line, exit 2 (``ConfigError``, printed by ``populax.cli``).
"""

from __future__ import annotations

import argparse
import difflib
from typing import NoReturn

from populax.errors import ConfigError


def closest_flags(tokens: list[str], known: list[str]) -> list[str]:
    """``did you mean`` notes for the unknown ``tokens`` (``--flag`` or ``--flag=value``) among ``known``."""
    flags = [token.partition("=")[0] for token in tokens if token.startswith("--")]
    notes = []
    for flag in flags:
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
        if close:
            notes.append(f"did you mean {close[0]}?" if len(flags) == 1 else f"did you mean {close[0]} for {flag}?")
    return notes


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are a :class:`ConfigError` of one line: what is wrong, the closest
    known flag to an unknown one, and where the options are listed."""

    def __init__(self, *args, hints: dict[str, str] | None = None, **kwargs):
        """``hints``: flag -> what to do instead, said when that flag is given to this command, which lacks it
        (``populax resume --total-steps``: a run's budget is fixed; ``--init-from`` trains on)."""
        super().__init__(*args, **kwargs)
        self.hints = hints or {}

    def error(self, message: str) -> NoReturn:
        """Raise the one-line ConfigError (argparse calls this on any unreadable command line)."""
        prefix = "unrecognized arguments: "
        notes = []
        if message.startswith(prefix):
            tokens = message[len(prefix):].split()
            notes = [self.hints[flag] for flag in dict.fromkeys(t.partition("=")[0] for t in tokens) if flag in self.hints]
            notes = notes or closest_flags(tokens, list(self._option_string_actions))
        raise ConfigError("; ".join([f"{self.prog}: {message}", *notes]) + f" ({self.prog} --help lists the options)")
