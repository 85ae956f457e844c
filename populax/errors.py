"""The one exception type a user's mistake raises, the warning for a setting a run does not read, and the warning
for an environment that trains but likely not as its author meant (said once per run: ``SaidOnce``)."""

import warnings


class ConfigError(ValueError):
    """A setting a user gave is invalid.

    The message is one sentence that names the setting and says what is
    allowed; the CLI prints it without a traceback and exits with code 2.
    """


class UnusedSettingWarning(UserWarning):
    """A setting changed from its default that the run never reads (``--workers`` without ``--executor ray``,
    a PBT setting under ``--strategy independent``, ...), or whose value leaves it without effect (a
    ``--learning-starts`` the run never reaches). :func:`populax.train` warns once per setting; the
    CLI prints each as ``populax: warning: ...``. ``warnings.simplefilter("error", UnusedSettingWarning)``
    makes them errors."""


class EnvironmentWarning(UserWarning):
    """An environment that trains, but likely not as its author meant: no time limit (an episode lasts until it
    terminates; an evaluation episode is cut at 100,000 steps), episodes of one step (a gymnax-API environment
    whose params keep ``EnvParams``' default ``max_steps_in_episode = 1``). The CLI prints it as
    ``populax: warning: ...``."""


def evaluation_cut_warning(env_name: str, steps: int) -> EnvironmentWarning:
    """The warning of evaluation episodes of ``env_name`` still running when populax's cut (``steps``) ended them:
    the same words on the host and compiled paths."""
    return EnvironmentWarning(f"--env: {env_name}: evaluation episodes still running after {steps:,} steps were cut "
                              "there; the environment has no time limit, or a longer one: set --max-episode-steps "
                              "(it truncates training episodes too) or --eval-max-steps")


class SaidOnce:
    """The EnvironmentWarnings a run has shown, so each is shown once per run: Python's warnings registry cannot
    remember them, since every ``catch_warnings`` around a call (an evaluation's, a worker's) clears it."""

    def __init__(self) -> None:
        self.messages: set[str] = set()

    def __contains__(self, message: object) -> bool:
        return str(message) in self.messages

    def warn(self, message: str | EnvironmentWarning, stacklevel: int = 2) -> None:
        """Show ``message`` as an EnvironmentWarning (pointing ``stacklevel`` frames above the caller) unless this
        run showed it already."""
        if message not in self:
            self.messages.add(str(message))
            warnings.warn(EnvironmentWarning(str(message)), stacklevel=stacklevel + 1)
