"""Atomic training checkpoints: ``<run>/checkpoints/step_00000123.pt``.

A checkpoint is written to a temporary file in the same folder, flushed to disk and then renamed
over its final name, so a run killed at any moment leaves either the previous set of checkpoints or
the new one, never a torn file. The newest complete checkpoint is the one with the largest step.
A run over several processes writes folders ``step_00000123/`` instead (sharded_checkpoint.py); both
kinds are listed here, so a run resumes from its newest checkpoint of either kind.
"""

import os
import pathlib
import re
import shutil

import torch

_NAME = re.compile(r"^step_(\d{8})(\.pt)?$")
# The file of a checkpoint folder that holds everything but the model and optimizer (sharded_checkpoint.py).
SHARDED_RUN_STATE = "run.pt"


def checkpoint_dir(run_dir) -> pathlib.Path:
    return pathlib.Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir, step: int) -> pathlib.Path:
    return checkpoint_dir(run_dir) / f"step_{step:08d}.pt"


def list_checkpoints(run_dir) -> list:
    """Checkpoint paths of a run, oldest step first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry))
    return [path for _, path in sorted(found)]


def latest_checkpoint(run_dir):
    paths = list_checkpoints(run_dir)
    return paths[-1] if paths else None


def atomic_write(path: pathlib.Path, write) -> None:
    """Call ``write(file)`` on a temporary sibling of ``path``, then rename it into place."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(run_dir, step: int, state: dict, keep: int) -> pathlib.Path:
    """Write the state for ``step`` and delete all but the ``keep`` newest checkpoints."""
    path = checkpoint_path(run_dir, step)
    atomic_write(path, lambda f: torch.save(state, f))
    for old in list_checkpoints(run_dir)[:-keep]:
        remove_checkpoint(old)
    return path


def remove_checkpoint(path: pathlib.Path) -> None:
    """Delete a checkpoint file or checkpoint folder."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def is_sharded(path) -> bool:
    """True for the folder checkpoint of a run over several processes (it holds SHARDED_RUN_STATE)."""
    return (pathlib.Path(path) / SHARDED_RUN_STATE).is_file()


def load_checkpoint(path) -> dict:
    """The state of a checkpoint: everything of a .pt file; a folder's run state and whole model weights."""
    if is_sharded(path):
        from .sharded_checkpoint import load_full

        return load_full(path)
    # Checkpoints hold plain Python containers besides tensors (configs, sampler position).
    return torch.load(path, map_location="cpu", weights_only=False)
