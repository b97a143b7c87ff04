"""Checkpoints of a run over several processes: ``<run>/checkpoints/step_00000123/``, written by every rank.

The folder is a torch.distributed.checkpoint (DCP) checkpoint of {"model", "optimizer"} (each rank writes
its shards; the state dicts are keyed by parameter name, so a run can resume on another number of processes
or context-parallel ranks, or in one process) plus ``run.pt``: the rest of the trainer's state (step,
sampler position, RNG, configs), the same on every rank and written by rank 0.

All ranks write into a hidden ``.step_00000123.tmp`` folder; once every rank is done, rank 0 adds run.pt
and renames the folder into place, so a kill at any moment leaves either the previous checkpoints or the new
one complete (a torn folder keeps its hidden name and is never read).
"""

import os
import pathlib
import shutil
import warnings

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from .checkpoint import SHARDED_RUN_STATE as RUN_STATE
from .checkpoint import atomic_write, checkpoint_dir, list_checkpoints, remove_checkpoint
from .model import ByteLlama, ModelConfig


def checkpoint_path(run_dir, step: int) -> pathlib.Path:
    return checkpoint_dir(run_dir) / f"step_{step:08d}"


def save(run_dir, step: int, model, optimizer, run_state: dict, keep: int, parallel) -> pathlib.Path:
    """Write the checkpoint of ``step`` (collective: every rank calls it) and keep the ``keep`` newest."""
    path = checkpoint_path(run_dir, step)
    staging = path.with_name(f".{path.name}.tmp")
    if parallel.is_main and staging.exists():
        shutil.rmtree(staging)  # left by a run killed while saving
    parallel.barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=staging)
    if parallel.is_main:
        atomic_write(staging / RUN_STATE, lambda f: torch.save(run_state, f))
        if path.exists():
            shutil.rmtree(path)  # the same step saved again after a resume from an older checkpoint
        os.replace(staging, path)
        for old in list_checkpoints(run_dir)[:-keep]:
            remove_checkpoint(old)
    parallel.barrier()  # every rank sees the new checkpoint before it goes on
    return path


def _read(state: dict, path) -> None:
    """dcp.load of the checkpoint folder into state: collective when a process group is initialized, else in
    this process alone (which DCP then warns about even when asked for explicitly: the warning is dropped)."""
    alone = not dist.is_initialized()
    with warnings.catch_warnings():
        if alone:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        dcp.load(state, checkpoint_id=pathlib.Path(path), no_dist=alone)


def read_run_state(path) -> dict:
    # run.pt holds plain Python containers besides tensors (configs, sampler position), as a .pt checkpoint.
    return torch.load(pathlib.Path(path) / RUN_STATE, map_location="cpu", weights_only=False)


def load(path, model, optimizer) -> None:
    """Load the model and optimizer state of a checkpoint folder into model and optimizer, whatever the
    layout they were saved from (collective when a process group is initialized; plain in one process)."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    _read(state, path)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def load_full(path) -> dict:
    """The run state of a checkpoint folder with the whole model state dict as "model" (CPU tensors): what a
    .pt checkpoint holds, less the optimizer. For eval, export and generate, which run in one process."""
    state = read_run_state(path)
    with torch.device("meta"):
        model = ByteLlama(ModelConfig.from_dict(state["model_config"]))
    model.to_empty(device="cpu")
    weights = {"model": model.state_dict()}
    _read(weights, path)
    return {**state, "model": weights["model"]}
