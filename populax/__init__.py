"""populax: train populations of RL agents in about the time of one."""

from populax.errors import ConfigError
from populax.run.config import TrainConfig
from populax.runtime import TrainResult, train

__all__ = ["ConfigError", "TrainConfig", "TrainResult", "train"]
__version__ = "0.1.0"
