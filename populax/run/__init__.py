"""Run configuration, run directory, logging."""
