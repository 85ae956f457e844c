"""MUJOCO_GL, MuJoCo's choice of OpenGL backend: which this machine can load, and a one-line error for one it cannot
(MuJoCo reads it when imported: by Gymnasium's MuJoCo tasks, by brax through MJX, by a video of either)."""

from __future__ import annotations

import importlib.util
import os

from populax.errors import ConfigError


def headless_gl_backends() -> list[str]:
    """The MUJOCO_GL values this machine has the library for (egl: libEGL, osmesa: libOSMesa)."""
    import ctypes.util

    return [name for name, library in (("egl", "EGL"), ("osmesa", "OSMesa")) if ctypes.util.find_library(library)]


def check_mujoco_gl() -> None:
    """ConfigError (one line) when ``import mujoco`` fails under the user's MUJOCO_GL (osmesa without libOSMesa
    raised an AttributeError from PyOpenGL at import, a traceback from any MuJoCo run)."""
    gl = os.environ.get("MUJOCO_GL")
    if not gl or importlib.util.find_spec("mujoco") is None:  # no MuJoCo: nothing to load
        return
    try:
        import mujoco  # noqa: F401  (the import is the check: it loads the MUJOCO_GL renderer)
    except Exception as error:
        others = [name for name in headless_gl_backends() if name != gl]
        raise ConfigError(f"MUJOCO_GL={gl}: MuJoCo cannot load that renderer here ({type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''}); unset MUJOCO_GL"
                          + (f" or set it to {' or '.join(others)}" if others else "")) from None
