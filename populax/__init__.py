"""populax: train populations of RL agents in about the time of one."""

from populax._version import __version__
from populax.agents import AgentSpec, Algorithm, register_algorithm
from populax.errors import ConfigError, EnvironmentWarning, UnusedSettingWarning
from populax.run.compare import compare_runs
from populax.run.config import TrainConfig
from populax.run.policy import Policy, load_policy
from populax.run.recipes import tuned_config
from populax.run.resume import evaluate_saved_member, load_run_checkpoint, resume
from populax.runtime import TrainResult, train

__all__ = ["AgentSpec", "Algorithm", "ConfigError", "EnvironmentWarning", "Policy", "TrainConfig", "TrainResult",
           "UnusedSettingWarning", "__version__", "compare_runs", "evaluate_saved_member", "load_policy", "load_run_checkpoint",
           "register_algorithm", "resume", "train", "tuned_config"]
