"""The one exception type a user's mistake raises, the warning for a setting a run does not read, and the warning
for an environment that trains but likely not as its author meant."""


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
