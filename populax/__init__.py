"""populax: train populations of RL agents in about the time of one."""

from populax._version import __version__
from populax.agents import AgentSpec, Algorithm, register_algorithm
from populax.errors import ConfigError, EnvironmentWarning, UnusedSettingWarning
from populax.run.compare import compare_runs
from populax.run.config import TrainConfig
from populax.run.policy import Policy, load_policy
from populax.runtime import TrainResult, train

__all__ = ["AgentSpec", "Algorithm", "ConfigError", "EnvironmentWarning", "Policy", "TrainConfig", "TrainResult",
           "UnusedSettingWarning", "__version__", "compare_runs", "load_policy", "register_algorithm", "train"]
