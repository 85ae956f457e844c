"""Checkpoints of a run: everything that influences its future, written atomically.

A checkpoint is a directory ``RUN/checkpoints/chunk_NNNNNN/`` holding

* ``state.msgpack`` -- the stacked population (parameters, targets, optimizer
  states, traced hyperparameters, replay buffers, environment states,
  observations, RNG keys, counters) and the strategy's state, serialised with
  flax's msgpack (a safe format: no code is ever loaded, unlike pickle);
* ``manifest.json`` -- the host loop's position (chunk index, metrics.jsonl
  byte offset, elapsed wall time, last returns), the payload's sha256, the
  populax version and a hash of the configuration.

Every backend uses the same format; the payload's ``extra`` holds the
backend's state outside the members (the host backend's collector RNG keys and
update count), and ``NNNNNN`` numbers chunks (evaluation periods).

It is written into a temporary directory next to the final one and renamed
into place, so a kill at any instant leaves every earlier checkpoint intact;
the sha256 catches a payload damaged afterwards (a truncated copy, a full
disk). Typed PRNG keys are stored as their raw key data and re-wrapped on load.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from flax import serialization
from jax.sharding import Sharding

from populax.coupled.dvd import bandit_init
from populax.errors import ConfigError
from populax.member import Cohorts

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.msgpack"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 2
"""2: members in the one layout of ``populax.member`` (1: the separate compiled and host layouts)."""
BUFFER_LIMIT_BYTES = 2 * 1024**3
"""Replay buffers larger than this (all members together) are left out of checkpoints."""
Placement = Callable[[int], Sharding]
"""Where a block of N members is read to (``populax.population.members_sharding`` of its executor's split)."""


@dataclass
class Checkpoint:
    """A checkpoint read back from disk."""

    path: Path
    manifest: dict[str, Any]
    """The manifest: ``chunk``, ``metrics_offset``, ``wall_time_s``, ``returns``, ..."""
    population: Any
    """The stacked member state, on device, with the template's structure and dtypes."""
    strategy: Any
    """The strategy's state as saved (nested dicts/lists of numpy arrays and numbers), or None."""
    extra: Any = None
    """Loop state outside the population (the host loop's collector keys, pending metrics...), as saved, or None."""


def is_key(leaf: Any) -> bool:
    """True for a typed PRNG key array (``jax.random.key``)."""
    return jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key)


def to_host(tree: Any) -> Any:
    """Numpy copy of a pytree's arrays; typed keys become their uint32 key data, other leaves stay as they are."""

    def convert(x: Any) -> Any:
        if is_key(x):
            return np.asarray(jax.random.key_data(x))
        return np.asarray(x) if isinstance(x, jax.Array | np.ndarray | np.generic) else x

    return jax.tree.map(convert, tree)


def config_hash(run_dir: Path) -> str:
    """Short hash of RUN/config.yaml's settings that shape the run (not where it is written or shown)."""
    settings = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    shaping = {k: v for k, v in settings.items() if k not in ("out", "force", "progress", "tensorboard", "ray_address")}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:16]


def buffer_bytes(population: Any) -> int:
    """Size of all members' replay buffers (0 for on-policy members, which have none)."""
    return sum(x.nbytes for x in jax.tree.leaves(getattr(population, "experience", None)))


def checkpoint_name(chunk: int) -> str:
    """Directory name of the checkpoint taken after ``chunk`` (zero-padded for people; order comes from ``chunk_index``)."""
    return f"chunk_{chunk:06d}"


def chunk_index(name: str) -> int | None:
    """The chunk number in a checkpoint directory name ``chunk_N``, or None when ``name`` is not one."""
    prefix, _, suffix = name.partition("_")
    # isdigit alone, not int(): int() also takes signs, spaces and underscores ("chunk_1_0").
    return int(suffix) if prefix == "chunk" and suffix.isascii() and suffix.isdigit() else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: Path,
    population: Any,
    *,
    chunk: int,
    manifest: dict[str, Any],
    strategy: Any = None,
    save_buffer: bool = True,
    keep: int = 3,
    extra: Any = None,
) -> Path:
    """Write the checkpoint after ``chunk`` atomically and keep only the newest ``keep``.

    ``manifest`` holds the host loop's position (JSON-able); ``strategy`` is any
    pytree of arrays, numbers, strings, lists and dicts a population strategy
    needs to continue exactly (PBT lineage, CEM mean and variance...); ``extra``
    is the same kind of pytree for the loop's own state outside the population
    (the host loop's collector RNG keys and not yet logged metrics).
    """
    root = run_dir / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    state = to_host(population)
    with_buffer = save_buffer and buffer_bytes(population) <= BUFFER_LIMIT_BYTES
    payload = {"population": serialization.to_state_dict(state), "strategy": to_host(strategy)}
    if extra is not None:
        payload["extra"] = to_host(extra)
    if not with_buffer:
        for members in saved_blocks(payload["population"]):
            members["experience"] = None
    data = serialization.msgpack_serialize(payload)
    manifest = {
        **manifest,
        "format": FORMAT_VERSION,
        "chunk": chunk,
        "buffer_saved": with_buffer,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }
    final = root / checkpoint_name(chunk)
    # Write everything into a temporary sibling, make it durable, then rename:
    # readers only ever see complete checkpoints.
    for stale in root.glob(".tmp-*"):  # left by a run killed mid-write; one writer per run, so garbage
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    tmp.chmod(0o755)  # mkdtemp makes it private; a checkpoint is as readable as the rest of the run
    for name, content in ((STATE_FILE, data), (MANIFEST_FILE, json.dumps(manifest, indent=2).encode())):
        with open(tmp / name, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
    if final.exists():  # a resumed run redoing a chunk replaces its checkpoint
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint directories of a run, oldest first (by chunk number, not by name).

    Names are padded to 6 digits only, so past chunk 999,999 a string sort
    would put ``chunk_1000000`` before ``chunk_999999``; directories whose
    suffix is not a number are not checkpoints.
    """
    root = run_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    numbered = [(chunk_index(p.name), p) for p in root.iterdir() if p.is_dir()]
    return [p for _, p in sorted((i, p) for i, p in numbered if i is not None)]


def verify(path: Path) -> tuple[dict[str, Any], bytes]:
    """Manifest and payload of the checkpoint at ``path``; ValueError says what is wrong."""
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"unreadable {MANIFEST_FILE} ({type(error).__name__})") from None
    try:
        data = (path / STATE_FILE).read_bytes()
    except OSError:
        raise ValueError(f"missing {STATE_FILE}") from None
    if len(data) != manifest.get("bytes") or hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
        raise ValueError(f"{STATE_FILE} does not match its checksum ({len(data)} of {manifest.get('bytes')} bytes)")
    return manifest, data


def saved_blocks(saved: dict) -> list[dict]:
    """The member blocks of a saved population: itself, or each cohort's of a mixed-shape one (``Cohorts``)."""
    return list(saved["blocks"].values()) if "blocks" in saved else [saved]


def restore(path: Path, template: Any, initial_hparams: Any = None, placement: Placement | None = None) -> Checkpoint:
    """Read the checkpoint at ``path`` into the structure of ``template``.

    ``template`` is the population as ``init`` makes it (arrays or
    ``jax.ShapeDtypeStruct``s), or for a mixed-shape population a function of
    the saved cohort assignment returning it (:class:`~populax.member.Cohorts`:
    members move between cohorts, so the blocks' sizes are the checkpoint's);
    its typed keys are rebuilt from key data, and a
    checkpoint saved without replay buffers gets the template's (empty) ones.
    A hyperparameter the checkpoint lacks (written before it existed) takes
    its value in ``initial_hparams``, the run's drawn hyperparameters.
    ``placement(members)``: where a block of that many members goes, read
    straight there from the host (a population split over devices is never
    whole on the first one); None: the default device.
    Raises ValueError when the payload is damaged or does not fit the template.
    """
    manifest, data = verify(path)
    if manifest.get("format") != FORMAT_VERSION:  # not damage: no older checkpoint of this run reads either
        raise ConfigError(f"RUN: {path.name} was written by another populax version (checkpoint format "
                          f"{manifest.get('format')}; this version reads {FORMAT_VERSION}); start a new run")
    payload = serialization.msgpack_restore(data)
    saved = payload["population"]
    if callable(template):
        if "assignment" not in saved:
            raise ValueError("does not fit this run's configuration (not a mixed-shape population)")
        template = template(np.asarray(saved["assignment"]))
    if isinstance(template, Cohorts):
        if set(saved.get("blocks", {})) != set(template.blocks):
            raise ValueError("does not fit this run's configuration (other cohorts)")
        blocks = {label: fit_members(saved["blocks"][label], block, initial_hparams, placement)
                  for label, block in template.blocks.items()}
        population = template.replace(blocks=blocks, assignment=jnp.asarray(saved["assignment"], jnp.int32))
    else:
        population = fit_members(saved, template, initial_hparams, placement)
    return Checkpoint(path=path, manifest=manifest, population=population, strategy=payload.get("strategy"),
                      extra=payload.get("extra"))


def fit_members(saved: dict, template: Any, initial_hparams: Any, placement: Placement | None = None) -> Any:
    """A saved block of members (a state dict) read into ``template``'s structure, shapes and dtypes, on the
    devices ``placement`` gives it, with what older checkpoints lack filled in (see :func:`restore`);
    ValueError when it does not fit."""
    host_template = jax.tree.map(
        lambda t: np.zeros(jax.eval_shape(jax.random.key_data, t).shape, np.uint32) if is_key(t) else np.zeros(t.shape, t.dtype),
        template,
    )
    if "shared" not in saved and hasattr(host_template, "shared"):  # written before coupled algorithms existed
        saved["shared"] = serialization.to_state_dict(host_template.shared)
    shared = saved.get("shared")
    if isinstance(shared, dict) and isinstance(shared.get("bandit"), dict) and "alpha" in shared["bandit"]:
        shared["bandit"] = fresh_bandit(host_template.shared.bandit)
    agent = saved.get("agent")
    if isinstance(agent, dict) and "critic" not in agent and getattr(host_template.agent, "critic", 0) is None:
        agent["critic"] = None  # a coupled actor written before DvD's per-member critics (none then)
    hparams = saved.get("hparams")
    if isinstance(hparams, dict) and initial_hparams is not None:
        # A traced hyperparameter added since this checkpoint was written (DQN's tau, advantage_alpha): new ones
        # default to the old behaviour, so the run's initial value of it (its config's or the default) is right.
        for name, value in serialization.to_state_dict(to_host(initial_hparams)).items():
            hparams.setdefault(name, value)
    if saved.get("experience") is None and getattr(host_template, "experience", None) is not None:
        saved["experience"] = serialization.to_state_dict(host_template.experience)
    try:
        state = serialization.from_state_dict(host_template, saved)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"does not fit this run's configuration ({error})") from None

    members = int(jax.tree.leaves(template)[0].shape[0])
    place = jnp.asarray if placement is None else functools.partial(jax.device_put, device=placement(members))

    def load(t: Any, x: Any) -> jax.Array:
        if is_key(t):
            return jax.random.wrap_key_data(place(np.asarray(x)))
        if tuple(np.shape(x)) != tuple(t.shape) or np.asarray(x).dtype != t.dtype:
            raise ValueError(f"does not fit this run's configuration (array {np.shape(x)} vs {t.shape})")
        return place(np.asarray(x, dtype=t.dtype))

    return jax.tree.map(load, template, state)


def fresh_bandit(template: Any) -> dict:
    """A new DvD bandit shaped like ``template``, for a checkpoint written before issue 22: the old bandit's
    never-forgetting counts of "beat the best ever" mean nothing under the reference's rule, so it starts
    afresh (uniform choices first, as at a run's start); the rest of the run resumes as saved."""
    bandit = bandit_init(window=template.feedback.shape[0], lookback=template.returns.shape[0] - 1)
    return serialization.to_state_dict(jax.tree.map(np.asarray, bandit))


def latest_checkpoint(run_dir: Path, template: Any, warn: Any = print, initial_hparams: Any = None,
                      placement: Placement | None = None) -> Checkpoint:
    """The newest checkpoint that verifies (``restore``, read onto ``placement``'s devices); each damaged newer
    one is reported in one line via ``warn``.

    Raises ConfigError when the run has no usable checkpoint.
    """
    candidates = list_checkpoints(run_dir)
    for path in reversed(candidates):
        try:
            return restore(path, template, initial_hparams, placement)
        except ValueError as problem:
            warn(f"populax: checkpoint {path.relative_to(run_dir)} is corrupt or partial: {problem}; using the previous one")
    if candidates:
        raise ConfigError(f"RUN: no usable checkpoint in {run_dir / CHECKPOINT_DIR} (all {len(candidates)} are damaged)")
    raise ConfigError(f"RUN: {run_dir} has no checkpoints to resume from")
