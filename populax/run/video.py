"""`populax eval RUN --member K --video PATH`: one episode of a saved member as an mp4.

* Host (Gymnasium/ALE) runs: the environment is built exactly as in training
  (same wrappers, same time limit) with ``render_mode="rgb_array"``, and the
  member acts on observations normalised with its saved statistics.
* gymnax runs: gymnax does not render. When the environment has a Gymnasium
  twin with the same dynamics, observation layout and action mapping
  (``populax.run.policy.GYMNASIUM_TWINS``, checked step by step in tests/test_video.py), the
  saved JAX policy is replayed in the twin; otherwise ``--video`` is refused.

Frames are encoded as H.264 by imageio-ffmpeg (its wheel ships ffmpeg), into a
temporary file renamed into place, so a failed recording leaves nothing behind.
Install with ``pip install populax[video]`` (also pulls pygame, which
Gymnasium's classic-control environments need to draw).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from populax.envs.mujoco_gl import headless_gl_backends
from populax.errors import ConfigError
from populax.run.policy import GymnasiumSource, Policy, gymnasium_source, load_policy, make_gymnasium_env

EXTRA = "populax[video]"


class Video(NamedTuple):
    """A written video."""

    path: Path
    frames: int
    episode_return: float
    steps: int
    source: GymnasiumSource


def check_video_path(path: str | Path) -> Path:
    """``path`` as a Path, after checking it names an .mp4 file in an existing directory."""
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ConfigError(f"--video: {path} must end in .mp4")
    if not path.parent.is_dir():
        raise ConfigError(f"--video: directory {path.parent} does not exist")
    if path.is_dir():
        raise ConfigError(f"--video: {path} is a directory")
    return path


def require_writer() -> Any:
    """The imageio_ffmpeg module, or a ConfigError naming the extra to install."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise ConfigError(f"--video: writing mp4 needs imageio-ffmpeg; install {EXTRA}") from None
    return imageio_ffmpeg


def even_frame(frame: np.ndarray) -> np.ndarray:
    """An RGB uint8 frame padded (edge pixels) to even height and width, as H.264's yuv420p needs."""
    frame = np.asarray(frame, np.uint8)[..., :3]
    pad = ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0))
    return np.ascontiguousarray(np.pad(frame, pad, mode="edge") if any(p[1] for p in pad) else frame)


class Mp4Writer:
    """Streams RGB frames (all one size) into an H.264 mp4, atomically.

    Frames go to ffmpeg as they come (a long MuJoCo episode would not fit in
    memory), into a hidden sibling file that only :meth:`finish` renames to
    ``path``; :meth:`discard` removes it.
    """

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self.partial = path.with_name(f".{path.name}.partial.mp4")
        self.frames = 0
        self._writer: Any = None

    def add(self, frame: np.ndarray) -> None:
        """Append one frame (padded to even sizes)."""
        frame = even_frame(frame)
        if self._writer is None:
            height, width = frame.shape[:2]
            with warnings.catch_warnings():
                # JAX warns about any os.fork(); this one is subprocess's fork+exec of ffmpeg, which is safe.
                warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
                self._writer = require_writer().write_frames(
                    str(self.partial), (width, height), fps=self.fps, codec="libx264", macro_block_size=1,
                    ffmpeg_log_level="error")
                self._writer.send(None)
        self._writer.send(frame)
        self.frames += 1

    def finish(self) -> None:
        """Close the stream and move the file into place."""
        self._writer.close()
        os.replace(self.partial, self.path)

    def discard(self) -> None:
        """Abandon the video: stop ffmpeg, remove the partial file."""
        if self._writer is not None:
            self._writer.close()
        self.partial.unlink(missing_ok=True)


def steps_per_agent_step(env: Any) -> int:
    """Emulator frames per agent step: AtariPreprocessing's frame skip (render_fps counts emulator frames)."""
    from gymnasium.wrappers import AtariPreprocessing

    while env is not None:
        if isinstance(env, AtariPreprocessing):
            return int(env.frame_skip)
        env = getattr(env, "env", None)
    return 1


def render_frame(env: Any, env_id: str) -> np.ndarray:
    """``env.render()`` with rendering problems turned into one-line errors."""
    import gymnasium

    try:
        frame = env.render()
    except gymnasium.error.DependencyNotInstalled as error:
        raise ConfigError(f"--video: rendering {env_id} needs a package that is missing ({str(error).splitlines()[0]}); "
                          f"install {EXTRA}") from None
    except NotImplementedError:  # gymnasium.Env's own render(): the environment draws nothing
        raise ConfigError(f"--video: {env_id} does not implement render() (rgb_array); a video needs an "
                          "environment that draws its frames") from None
    except Exception as error:  # MuJoCo without an OpenGL context, mostly
        reason = f"{type(error).__name__}: {str(error).splitlines()[0]}" if str(error) else type(error).__name__
        usable = [name for name in headless_gl_backends() if name != os.environ.get("MUJOCO_GL")]  # not the failing one
        raise ConfigError(f"--video: {env_id} cannot render here ({reason}); MuJoCo without a display needs "
                          + (" or ".join(f"MUJOCO_GL={name}" for name in usable) if usable else
                             "MUJOCO_GL=egl or MUJOCO_GL=osmesa, and this machine has neither libEGL nor libOSMesa")) from None
    if frame is None or np.ndim(frame) != 3:
        raise ConfigError(f"--video: {env_id} returned no rgb_array frame")
    return frame


def record_episode(env: Any, env_id: str, act: Callable[[np.ndarray], Any], seed: int,
                   on_frame: Callable[[np.ndarray], None], max_steps: int = 100_000) -> tuple[float, int]:
    """Return and length of one episode under ``act``; each frame (the first one, then one per step) goes to ``on_frame``."""
    obs, _ = env.reset(seed=seed)
    on_frame(render_frame(env, env_id))
    total, steps = 0.0, 0
    while steps < max_steps:
        obs, reward, terminated, truncated, _ = env.step(act(obs))
        total += float(reward)
        steps += 1
        on_frame(render_frame(env, env_id))
        if terminated or truncated:
            break
    return total, steps


def record_member_video(run_dir: str | Path, member: int | None, path: str | Path, seed: int | None = None,
                        warn: Callable[[str], None] = print) -> tuple[Video, Policy]:
    """Write an mp4 of one episode of ``member`` (None: the best of the last evaluation) as saved in the run's
    newest good checkpoint.

    Every check (member, path, renderable env, writer installed) runs before
    anything is loaded or written. Returns the video and the member's :class:`~populax.run.policy.Policy`.
    """
    from populax.run.resume import check_member
    from populax.runtime.loading import load_config

    config = load_config(run_dir)
    if member is not None:
        check_member(config, member)
    path = check_video_path(path)
    gymnasium_source(config.env, "--video")
    require_writer()
    policy = load_policy(run_dir, member, warn)
    # pygame (classic control) draws off-screen: no display, no sound card, no complaints about either.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env, source = make_gymnasium_env(config, render_mode="rgb_array", setting="--video")
        writer = Mp4Writer(path, float(env.metadata.get("render_fps") or 30) / steps_per_agent_step(env))
        try:
            total, steps = record_episode(env, source.gymnasium_id, policy, seed=config.seed if seed is None else seed,
                                          on_frame=writer.add)
            writer.finish()
        except BaseException:
            writer.discard()
            raise
        finally:
            env.close()
    return Video(path, writer.frames, total, steps, source), policy
