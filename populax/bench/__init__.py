"""Benchmarks: `populax bench update-step` (the paper's Figure 2), see update_step.py."""
