"""The run, written once for every backend: setup (``setup.py``), the chunk driver
(``driver.py``) and the member layout strategies edit (``member.py``)."""

from populax.runtime.driver import Progress, TrainResult, run, train
from populax.runtime.setup import RunSetup, init_population, prepare

__all__ = ["Progress", "RunSetup", "TrainResult", "init_population", "prepare", "run", "train"]
