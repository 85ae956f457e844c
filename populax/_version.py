"""populax's version: the one place it is written (pyproject.toml reads it; run manifests record it), so a
checkout used through PYTHONPATH, without pip's metadata, reports the same version as an installed copy."""

__version__ = "0.1.0"
